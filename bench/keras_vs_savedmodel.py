"""Load time and one-row latency of a `model.keras` version against the same model exported as a
SavedModel, served side by side by one `python -m app`.

The model is the committed `mnist` network rebuilt from its recipe with the trained weights
(those of the newest `models/mnist/<version>/` SavedModel, restored as `--init-from` restores
them): saved once as `model.keras` and once with Keras' own `model.export` (a SavedModel with a
`serving_default` signature). Both go into one temporary repository as `keras/1` and
`savedmodel/1`.

- load: `Servable.load` (read, trace or restore, warm-up) in this process, alternating the two
  `--load-repeats` times after one untimed load of each (imports and first-trace costs);
- the serving function alone: `Servable.predict` at one row in this process, 250-call blocks
  alternated;
- latency, alternated one by one: the same bodies from a Python client on two keep-alive
  connections, one request to each model in turn (`--interleaved-calls` each): the pairs share
  whatever else the machine is doing, which the wrk rounds below cannot guarantee;
- latency: one server over the repository, `wrk -t1 -c1` on TF Serving's `:predict` and KServe
  v2 binary with the same one-digit body, alternating A/B for `--rounds` rounds of
  `--duration` s each (after one probe each); the p50 per round, their median, and the
  median of the per-round keras/savedmodel ratios.

    .venv/bin/python -m bench.keras_vs_savedmodel   # writes bench/results/keras_vs_savedmodel.*
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.repository.format import newest_version_dir
from bench.loadgen import BodyFiles, run_wrk
from bench.payloads import Payload, sample_digits
from bench.processes import ServerProcess, free_port, http_request, service_command

REPO_ROOT = Path(__file__).resolve().parents[1]
KINDS = ("keras", "savedmodel")


def build_models(repository: Path) -> dict[str, str]:
    """The two versions of the trained mnist network; returns each model's input name."""
    from training import warm_start
    from training.nets.mnist import MnistRecipe
    from training.recipe import TrainConfig

    newest = newest_version_dir(REPO_ROOT / "models" / "mnist")
    assert newest is not None, "no published mnist version"
    recipe, config = MnistRecipe(), TrainConfig(epochs=1, batch_size=64)
    model = recipe.build_training_model(config)
    warm_start.restore(recipe, model, config, warm_start.locate(newest))
    (repository / "keras" / "1").mkdir(parents=True)
    model.save(repository / "keras" / "1" / "model.keras")
    model.export(str(repository / "savedmodel" / "1"), verbose=False)
    return {"keras": "image", "savedmodel": "image"}


def time_loads(repository: Path, repeats: int) -> dict[str, list[float]]:
    from app.servable import Servable

    for kind in KINDS:  # untimed: imports, first traces
        Servable.load(kind, 1, repository / kind / "1")
    seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(repeats):
        for kind in KINDS:
            started = time.perf_counter()
            Servable.load(kind, 1, repository / kind / "1")
            seconds[kind].append(time.perf_counter() - started)
    return seconds


def time_predicts(repository: Path, blocks: int, calls: int) -> dict[str, list[float]]:
    """The serving function alone at one row, in this process: per-call ms, blocks alternated."""
    from app.servable import Servable

    servables = {kind: Servable.load(kind, 1, repository / kind / "1") for kind in KINDS}
    digit = {"image": sample_digits()[:1].astype(np.float32).reshape(1, 28, 28, 1)}
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(blocks):
        for kind, servable in servables.items():
            for _ in range(calls):
                started = time.perf_counter()
                servable.predict(digit)
                times[kind].append((time.perf_counter() - started) * 1000)
    return times


def payloads(model: str, input_name: str) -> list[Payload]:
    digit = sample_digits()[:1].astype(np.float32).reshape(1, 28, 28, 1)
    tfs = json.dumps({"inputs": {input_name: digit.tolist()}}).encode()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(digit.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": digit.nbytes},
                }
            ],
            "outputs": [{"name": "output_0" if model == "savedmodel" else "probabilities"}],
        }
    ).encode()
    return [
        Payload("tfs", model, 1, f"/v1/models/{model}:predict", "application/json", tfs, None),
        Payload(
            "v2bin",
            model,
            1,
            f"/v2/models/{model}/infer",
            "application/octet-stream",
            header + digit.tobytes(),
            len(header),
        ),
    ]


def time_interleaved(
    port: int, every: dict[str, list[Payload]], calls: int
) -> dict[str, dict[str, list[float]]]:
    """One request to each model in turn on two keep-alive connections (order swapped every
    call), so whatever else runs on the machine slows both sides of each pair alike."""
    connections = {kind: http.client.HTTPConnection("127.0.0.1", port) for kind in KINDS}
    times: dict[str, dict[str, list[float]]] = {}
    try:
        for index in range(2):
            for call in range(calls):
                order = KINDS if call % 2 == 0 else tuple(reversed(KINDS))
                for kind in order:
                    payload = every[kind][index]
                    headers = {"Content-Type": payload.content_type}
                    if payload.header_length is not None:
                        headers["Inference-Header-Content-Length"] = str(payload.header_length)
                    started = time.perf_counter()
                    connections[kind].request("POST", payload.path, payload.body, headers)
                    response = connections[kind].getresponse()
                    response.read()
                    elapsed = (time.perf_counter() - started) * 1000
                    assert response.status == 200, response.status
                    times.setdefault(payload.protocol, {}).setdefault(kind, []).append(elapsed)
    finally:
        for connection in connections.values():
            connection.close()
    return times


def time_requests(
    repository: Path,
    inputs: dict[str, str],
    rounds: int,
    duration_s: float,
    logs: Path,
    interleaved_calls: int,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, list[float]]]]:
    port = free_port()
    server = ServerProcess(
        "service",
        service_command(repository, port, ["--device", "cpu", "--log-level", "warning"]),
        port,
        [f"/v2/models/{kind}/ready" for kind in KINDS],
        logs / "server.log",
        env={"TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=REPO_ROOT,
    )
    bodies = BodyFiles()
    p50: dict[str, dict[str, list[float]]] = {}
    try:
        server.start()
        url = f"http://127.0.0.1:{port}"
        every = {kind: payloads(kind, inputs[kind]) for kind in KINDS}
        for kind in KINDS:  # one probe each must answer 200 (wrk would only count errors)
            for payload in every[kind]:
                headers = {"Content-Type": payload.content_type}
                if payload.header_length is not None:
                    headers["Inference-Header-Content-Length"] = str(payload.header_length)
                status, answer = http_request(port, "POST", payload.path, payload.body, headers)
                if status != 200:
                    raise RuntimeError(f"{kind} {payload.protocol}: {status} {answer[:300]!r}")
        for _ in range(rounds):
            for index in range(2):
                for kind in KINDS:
                    payload = every[kind][index]
                    result = run_wrk(url, payload, bodies.path_for(payload), 1, duration_s)
                    assert result.status_errors == 0 and result.socket_errors == 0
                    p50.setdefault(payload.protocol, {}).setdefault(kind, []).append(result.p50_ms)
        interleaved = time_interleaved(port, every, interleaved_calls)
    finally:
        server.stop()
        bodies.cleanup()
    return p50, interleaved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per point")
    parser.add_argument("--load-repeats", type=int, default=5)
    parser.add_argument(
        "--interleaved-calls", type=int, default=2000, help="requests per model and protocol"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    options = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="keras-vs-savedmodel-") as folder:
        repository = Path(folder) / "models"
        inputs = build_models(repository)
        loads = time_loads(repository, options.load_repeats)
        predicts = time_predicts(repository, options.rounds * 4, 250)
        latency, interleaved = time_requests(
            repository,
            inputs,
            options.rounds,
            options.duration,
            Path(folder),
            options.interleaved_calls,
        )
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "load_s": {k: {"median": statistics.median(v), "all": v} for k, v in loads.items()},
        "in_process_predict_ms_one_row": {
            **{k: {"p50": statistics.median(v), "calls": len(v)} for k, v in predicts.items()},
            "keras_over_savedmodel": statistics.median(predicts["keras"])
            / statistics.median(predicts["savedmodel"]),
        },
        "interleaved_p50_ms_one_row": {
            protocol: {
                **{k: {"p50": statistics.median(v), "calls": len(v)} for k, v in kinds.items()},
                "keras_over_savedmodel": statistics.median(kinds["keras"])
                / statistics.median(kinds["savedmodel"]),
            }
            for protocol, kinds in interleaved.items()
        },
        "p50_ms_c1_one_row": {
            protocol: {
                **{k: {"median": statistics.median(v), "rounds": v} for k, v in kinds.items()},
                "keras_over_savedmodel": statistics.median(kinds["keras"])
                / statistics.median(kinds["savedmodel"]),
                # Each round's two points ran back to back: their ratio cancels slow drift in
                # what else the machine is doing.
                "median_of_round_ratios": statistics.median(
                    k / s for k, s in zip(kinds["keras"], kinds["savedmodel"], strict=True)
                ),
            }
            for protocol, kinds in latency.items()
        },
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "keras_vs_savedmodel.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# model.keras against the same model as a SavedModel (mnist network, one server)",
        "",
        f"{report['when']}, {report['cpus']} CPUs, load average "
        f"{report['load_average_at_start']:.2f} at start, {report['load_average_at_end']:.2f} at "
        "the end (other work shared the cores: wall-clock numbers are noisy).",
        "",
        "| | keras | savedmodel | keras / savedmodel (median of round ratios) |",
        "| --- | --- | --- | --- |",
        "| load + warm-up, median s | {:.3f} | {:.3f} | {:.2f} |".format(
            report["load_s"]["keras"]["median"],
            report["load_s"]["savedmodel"]["median"],
            report["load_s"]["keras"]["median"] / report["load_s"]["savedmodel"]["median"],
        ),
    ]
    predict = report["in_process_predict_ms_one_row"]
    lines.append(
        f"| serving function alone, one row, in process, p50 ms | {predict['keras']['p50']:.3f} "
        f"| {predict['savedmodel']['p50']:.3f} | {predict['keras_over_savedmodel']:.3f} |"
    )
    for protocol, row in report["p50_ms_c1_one_row"].items():
        lines.append(
            f"| {protocol} one row c=1 p50, median of rounds, ms | {row['keras']['median']:.3f} "
            f"| {row['savedmodel']['median']:.3f} | {row['keras_over_savedmodel']:.3f} "
            f"({row['median_of_round_ratios']:.3f}) |"
        )
    for protocol, row in report["interleaved_p50_ms_one_row"].items():
        lines.append(
            f"| {protocol} one row, requests alternated one by one (Python client), p50 ms "
            f"| {row['keras']['p50']:.3f} | {row['savedmodel']['p50']:.3f} "
            f"| {row['keras_over_savedmodel']:.3f} |"
        )
    (options.out / "keras_vs_savedmodel.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

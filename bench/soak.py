"""`python -m bench.soak`: mixed traffic for a while, hostile requests among it, versions coming
and going; then the verdict, a JSON file and a PNG plot of latency and memory over time.

What it does, against one real server on 127.0.0.1 (`python -m app`, tokens configured):
- good traffic on all three models and every protocol (TF Serving JSON, v2 JSON, v2 binary, the
  picture task endpoints, a labelled route), from `--concurrency` client tasks;
- hostile requests, `--hostile-fraction` of all (malformed bodies, lying declared sizes, huge
  declared shapes, an OCR strip 100,000 px wide, an extreme picture, missing or wrong tokens);
- every `--publish-every` seconds a new `mnist` version published the way training publishes
  (a hidden staging folder renamed into place) and the `stable`/`canary` labels moved to it.

Verdict (exit status 1 when any fails): zero failed good requests, every hostile request a 4xx,
the server alive at the end, resident memory growth under `--max-rss-growth-mb` (see
`memory_growth`: peaks once a version was retired against the peak before).
The load generator runs on the same cores as the server: its own CPU time is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import random
import resource
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from PIL import Image

from app.repository.format import list_versions, newest_version_dir
from bench.payloads import build_payload, sample_digits
from bench.processes import ServerProcess, free_port, service_command

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mnist", "deskew", "ocr")
API_TOKEN = "soak-api-token"
ADMIN_TOKEN = "soak-admin-token"
POLL_INTERVAL_S = 0.5
VERSIONS_KEPT = 2
MEMORY_SAMPLE_S = 1.0
WARM_UP_S = 10.0
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Request:
    """One request of the mix: what to send, and whether it is a good one."""

    kind: str
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    good: bool


@dataclass
class Outcome:
    at_s: float
    kind: str
    good: bool
    status: int
    latency_ms: float
    detail: str = ""


@dataclass
class Run:
    started: float = field(default_factory=time.monotonic)
    outcomes: list[Outcome] = field(default_factory=list)
    memory: list[tuple[float, float]] = field(default_factory=list)  # (seconds, RSS MiB)
    published: list[tuple[float, int]] = field(default_factory=list)
    publish_errors: list[str] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started


# ---- the request mix -------------------------------------------------------------------------


def _auth(token: str = API_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def good_requests() -> list[Request]:
    """Every model on every protocol, plus the task endpoints and a labelled route."""
    requests: list[Request] = []
    for model in MODELS:
        for protocol in ("tfs", "v2json", "v2bin"):
            payload = build_payload(protocol, model, 1)
            headers = {**_auth(), "Content-Type": payload.content_type}
            if payload.header_length is not None:
                headers["Inference-Header-Content-Length"] = str(payload.header_length)
            requests.append(
                Request(
                    f"{model}-{protocol}", "POST", payload.path, payload.body, headers, good=True
                )
            )
    labelled = build_payload("tfs", "mnist", 1)
    for label in ("stable", "canary"):
        requests.append(
            Request(
                f"mnist-label-{label}",
                "POST",
                f"/v1/models/mnist/labels/{label}:predict",
                labelled.body,
                {**_auth(), "Content-Type": "application/json"},
                good=True,
            )
        )
    digit = _png((255 - sample_digits()[3] * 255).astype(np.uint8))
    strip = _png(
        (255 - np.concatenate(list(sample_digits()[[1, 7, 4]]), axis=1) * 255).astype(np.uint8)
    )
    for path, picture in (
        ("/tasks/classify-digit", digit),
        ("/tasks/estimate-skew", digit),
        ("/tasks/read-digits", strip),
    ):
        requests.append(
            Request(
                f"task{path.rsplit('/', 1)[1]}",
                "POST",
                path,
                picture,
                {**_auth(), "Content-Type": "image/png"},
                good=True,
            )
        )
    return requests


def hostile_requests() -> list[Request]:
    """Small requests that must each get a 4xx and cost the server next to nothing."""
    json_headers = {**_auth(), "Content-Type": "application/json"}
    huge_bytes_header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1_000_000_000],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    )
    wide = np.zeros((1, 28, 100_000, 1), np.float32)
    wide_header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": list(wide.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": wide.nbytes},
                }
            ]
        }
    )
    extreme = _png(np.full((2, 20_000), 255, np.uint8))
    return [
        Request(
            "malformed-json",
            "POST",
            "/v1/models/mnist:predict",
            b'{"instances": [1,',
            json_headers,
            good=False,
        ),
        Request(
            "bytes-bomb",
            "POST",
            "/v2/models/mnist/infer",
            huge_bytes_header + struct.pack("<I", 4) + b"abcd",
            {
                **_auth(),
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(huge_bytes_header)),
            },
            good=False,
        ),
        Request(
            "astronomic-shape",
            "POST",
            "/v2/models/mnist/infer",
            b'{"inputs": [{"name": "image", "shape": [1' + b"0" * 30 + b", 28, 28, 1], "
            b'"datatype": "FP32", "data": [0.0]}]}',
            json_headers,
            good=False,
        ),
        Request(
            "ocr-100k-wide",
            "POST",
            "/v2/models/ocr/infer",
            wide_header + wide.tobytes(),
            {
                **_auth(),
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(wide_header)),
            },
            good=False,
        ),
        Request(
            "extreme-picture",
            "POST",
            "/tasks/estimate-skew",
            extreme,
            {**_auth(), "Content-Type": "image/png"},
            good=False,
        ),
        Request(
            "no-token",
            "POST",
            "/v1/models/mnist:predict",
            build_payload("tfs", "mnist", 1).body,
            {"Content-Type": "application/json"},
            good=False,
        ),
        Request("wrong-token", "GET", "/v1/models/mnist", b"", _auth("not-the-token"), good=False),
        Request(
            "api-token-on-admin",
            "POST",
            "/v2/repository/models/mnist/unload",
            b"{}",
            json_headers,
            good=False,
        ),
        Request(
            "duplicate-outputs",
            "POST",
            "/v2/models/mnist/infer",
            orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "image",
                            "shape": [1, 28, 28, 1],
                            "datatype": "FP32",
                            "data": [0.0] * 784,
                        }
                    ],
                    "outputs": [{"name": "class_id"}] * 1000,
                }
            ),
            json_headers,
            good=False,
        ),
    ]


# ---- the parts of a run ----------------------------------------------------------------------


async def send(client: httpx.AsyncClient, request: Request, run: Run) -> None:
    started = time.perf_counter()
    detail = ""
    try:
        response = await client.request(
            request.method, request.path, content=request.body, headers=request.headers
        )
        status = response.status_code
        if status >= 400 and request.good or status >= 500:
            detail = response.text[:300]
    except httpx.HTTPError as exc:
        status, detail = 0, f"{type(exc).__name__}: {exc}"
    run.outcomes.append(
        Outcome(
            run.now(),
            request.kind,
            request.good,
            status,
            (time.perf_counter() - started) * 1000,
            detail,
        )
    )


async def client_loop(
    base_url: str,
    good: Sequence[Request],
    hostile: Sequence[Request],
    hostile_fraction: float,
    until: float,
    seed: int,
    run: Run,
) -> None:
    chooser = random.Random(seed)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits
    ) as client:
        while time.monotonic() < until:
            pool = hostile if chooser.random() < hostile_fraction else good
            await send(client, chooser.choice(pool), run)


def publish_version(repository: Path, model: str, source: Path) -> int:
    """Copy `source` as the next version, staged in a hidden folder and renamed into place."""
    version = max(list_versions(repository / model), default=0) + 1
    staging = repository / model / f".tmp-soak-{version}"
    shutil.copytree(source, staging)
    staging.rename(repository / model / str(version))
    return version


def write_config(repository: Path, labels: dict[str, int]) -> None:
    """The repository config, replaced in one rename (what an editor's save may not do)."""
    text = (
        f"models:\n  mnist:\n    version_policy: {{latest: {VERSIONS_KEPT}}}\n"
        f"    labels: {{stable: {labels['stable']}, canary: {labels['canary']}}}\n"
    )
    staging = repository / ".config.yaml.tmp"
    staging.write_text(text)
    staging.rename(repository / "config.yaml")


async def wait_available(base_url: str, model: str, version: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0, headers=_auth()) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                answer = await client.get(f"/v1/models/{model}/versions/{version}")
                states = answer.json().get("model_version_status", []) if answer.is_success else []
                if any(s.get("state") == "AVAILABLE" for s in states):
                    return True
            await asyncio.sleep(0.2)
    return False


async def publisher(
    base_url: str, repository: Path, source: Path, every_s: float, until: float, run: Run
) -> None:
    """Publish a version, wait until it serves, then point `canary` at it and `stable` at the
    one before: labels only ever name versions that the policy keeps loaded."""
    newest = 1
    while time.monotonic() + every_s < until:
        await asyncio.sleep(every_s)
        # Both labels on the newest first, so the version the policy retires is unlabelled.
        write_config(repository, {"stable": newest, "canary": newest})
        await asyncio.sleep(3 * POLL_INTERVAL_S)
        version = await asyncio.to_thread(publish_version, repository, "mnist", source)
        if not await wait_available(base_url, "mnist", version, timeout_s=60.0):
            run.publish_errors.append(f"mnist version {version} did not become AVAILABLE")
            return
        write_config(repository, {"stable": newest, "canary": version})
        run.published.append((run.now(), version))
        newest = version


async def memory_sampler(server: ServerProcess, until: float, run: Run) -> None:
    while time.monotonic() < until:
        run.memory.append((run.now(), server.memory().rss_mib))
        await asyncio.sleep(MEMORY_SAMPLE_S)


# ---- set-up, verdict, report -----------------------------------------------------------------


def prepare_repository(source: Path, target: Path) -> Path:
    """The newest version of each model as version 1, and labels on mnist version 1."""
    for model in MODELS:
        newest = newest_version_dir(source / model)
        if newest is None:
            raise SystemExit(f"no published version of {model} under {source}")
        shutil.copytree(newest, target / model / "1")
    write_config(target, {"stable": 1, "canary": 1})
    return target / "mnist" / "1"


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def memory_growth(run: Run) -> dict[str, Any]:
    """How much the resident size grew once the server reached its working set.

    The working set includes a hot reload: with `latest: 2` two versions of `mnist` are loaded
    and, while a third loads, three. So the baseline is the peak from the end of warm-up until
    the first publish that retires a version, and the growth is the peak after it minus that
    baseline: each later cycle loads and retires a version the same way, so a version or a
    request that leaks shows up as peaks that keep rising. The older measure, the peak after
    warm-up minus its first sample, counted the first second version as growth (28 MB here) and
    failed a CI run at 54.5 MB with every other check green; it remains the fallback for a run
    too short to retire a version.
    """
    samples = [(at, rss) for at, rss in run.memory if at >= WARM_UP_S] or run.memory
    if not samples:
        return {"baseline": None, "peak_after": None, "growth": float("nan"), "since_s": None}
    retiring = [at for at, version in run.published if version > VERSIONS_KEPT]
    if retiring:
        since = retiring[0]
        baseline = max([rss for at, rss in samples if at < since] or [samples[0][1]])
    else:
        since, baseline = samples[0]
    peak_after = max([rss for at, rss in samples if at >= since] or [baseline])
    return {
        "baseline": baseline,
        "peak_after": peak_after,
        "growth": round(peak_after - baseline, 1),
        "since_s": round(since, 1),
        "every_5_s": [round(rss, 1) for _, rss in run.memory[:: int(5 / MEMORY_SAMPLE_S)]],
    }


def summarise(
    run: Run, duration_s: float, max_rss_growth_mb: float, server_alive: bool, load_cpu_s: float
) -> dict[str, Any]:
    good = [o for o in run.outcomes if o.good]
    hostile = [o for o in run.outcomes if not o.good]
    failed_good = [o for o in good if o.status != 200]
    bad_hostile = [o for o in hostile if not 400 <= o.status < 500]
    memory = memory_growth(run)
    minutes = []
    for minute in range(int(duration_s // 60) + 1):
        latencies = [o.latency_ms for o in good if minute * 60 <= o.at_s < (minute + 1) * 60]
        if latencies:
            minutes.append(
                {
                    "minute": minute,
                    "requests": len(latencies),
                    "p50_ms": round(percentile(latencies, 50), 2),
                    "p99_ms": round(percentile(latencies, 99), 2),
                }
            )
    hostile_statuses: dict[str, dict[str, int]] = {}
    for outcome in hostile:
        counts = hostile_statuses.setdefault(outcome.kind, {})
        counts[str(outcome.status)] = counts.get(str(outcome.status), 0) + 1
    checks = {
        "zero failed good requests": not failed_good,
        "every hostile request answered 4xx": not bad_hostile,
        "server alive at the end": server_alive,
        f"RSS growth past the working set under {max_rss_growth_mb:g} MB": memory["growth"]
        < max_rss_growth_mb,
        "every published version served": not run.publish_errors,
    }
    return {
        "duration_s": duration_s,
        "requests": {
            "good": len(good),
            "hostile": len(hostile),
            "good_per_s": round(len(good) / duration_s, 1),
        },
        "failed_good": [vars(o) for o in failed_good[:20]],
        "failed_good_count": len(failed_good),
        "hostile_not_4xx": [vars(o) for o in bad_hostile[:20]],
        "hostile_statuses": hostile_statuses,
        "latency_per_minute": minutes,
        "rss_mib": memory,
        "versions_published": [version for _, version in run.published],
        "publish_errors": run.publish_errors,
        "load_generator_cpu_s": round(load_cpu_s, 1),
        "checks": checks,
        "passed": all(checks.values()),
    }


def plot(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency_axis, memory_axis) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    good = [o for o in run.outcomes if o.good]
    latency_axis.scatter(
        [o.at_s for o in good], [o.latency_ms for o in good], s=2, alpha=0.3, label="good requests"
    )
    seconds = int(max((o.at_s for o in good), default=0)) + 1
    p99 = [
        percentile([o.latency_ms for o in good if s - 5 <= o.at_s < s + 5], 99)
        for s in range(seconds)
    ]
    latency_axis.plot(range(seconds), p99, color="crimson", label="p99 (10 s window)")
    for at, version in run.published:
        for axis in (latency_axis, memory_axis):
            axis.axvline(at, color="grey", linewidth=0.6, linestyle=":")
        latency_axis.annotate(f"v{version}", (at, 0), fontsize=7, color="grey")
    latency_axis.set_yscale("log")
    latency_axis.set_ylabel("latency (ms)")
    latency_axis.legend(loc="upper right")
    memory_axis.plot([at for at, _ in run.memory], [rss for _, rss in run.memory])
    memory_axis.set_ylabel("server RSS (MiB)")
    memory_axis.set_xlabel("seconds (dotted: a new mnist version published)")
    figure.suptitle("kerasserve soak: latency and memory")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


async def soak(arguments: argparse.Namespace, repository: Path, log_dir: Path) -> dict[str, Any]:
    source = prepare_repository(arguments.model_repository, repository)
    port = free_port()
    server = ServerProcess(
        name="kerasserve",
        command=service_command(
            repository,
            port,
            [
                "--poll-interval",
                str(POLL_INTERVAL_S),
                "--api-token",
                API_TOKEN,
                "--admin-token",
                ADMIN_TOKEN,
                "--log-level",
                "warning",
            ],
        ),
        port=port,
        ready_paths=["/v2/health/ready"],
        log_path=log_dir / "server.log",
        cwd=REPO_ROOT,
    )
    server.start()
    base_url = f"http://127.0.0.1:{port}"
    run = Run()
    until = time.monotonic() + arguments.duration
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        good, hostile = good_requests(), hostile_requests()
        tasks: list[Any] = [
            client_loop(base_url, good, hostile, arguments.hostile_fraction, until, seed, run)
            for seed in range(arguments.concurrency)
        ]
        tasks.append(publisher(base_url, repository, source, arguments.publish_every, until, run))
        tasks.append(memory_sampler(server, until, run))
        await asyncio.gather(*tasks)
        alive = server.process is not None and server.process.poll() is None
        with contextlib.suppress(httpx.HTTPError):
            alive = alive and httpx.get(f"{base_url}/v2/health/live", timeout=5).is_success
    finally:
        server.stop()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    load_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    summary = summarise(run, arguments.duration, arguments.max_rss_growth_mb, alive, load_cpu)
    arguments.out.mkdir(parents=True, exist_ok=True)
    plot(run, arguments.out / "soak.png")
    (arguments.out / "soak.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    if not summary["passed"]:
        summary["server_log_tail"] = server.log_tail(3000)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--concurrency", type=int, default=8, help="client tasks (default 8)")
    parser.add_argument("--hostile-fraction", type=float, default=0.05)
    parser.add_argument("--publish-every", type=float, default=30.0, help="seconds")
    parser.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "soak")
    return parser


def main(argv: Sequence[str] | None = None, report: Callable[[str], None] = print) -> int:
    arguments = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kerasserve-soak-") as scratch:
        repository = Path(scratch) / "repository"
        repository.mkdir()
        summary = asyncio.run(soak(arguments, repository, Path(scratch) / "logs"))
    report(
        orjson.dumps(
            {
                key: summary[key]
                for key in (
                    "requests",
                    "failed_good_count",
                    "rss_mib",
                    "latency_per_minute",
                    "versions_published",
                    "load_generator_cpu_s",
                    "checks",
                    "passed",
                )
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    )
    if not summary["passed"]:
        report(f"FAILED; details in {arguments.out / 'soak.json'}")
        report(summary.get("server_log_tail", ""))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

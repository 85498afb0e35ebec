"""The benchmark: start each server in turn, drive it with wrk, write results.json and results.md.

One command (from the repository root, with the service's venv):

    .venv/bin/python -m bench.run [--quick] [--out bench/results]

Round 1 sweeps every system over every scenario (model x protocol x rows per request) at every
concurrency. Rounds 2..N (`--repeats`) restart the systems in the same alternating order
(service, PyTriton, unbatched, naive, ...) and repeat only the points the issue's targets read,
so that each target ratio is a median of N A/B pairs taken minutes apart in one run. Servers run
one at a time on 127.0.0.1 with a free port; each is stopped (its whole session) before the next.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.repository.format import newest_version_dir
from bench.loadgen import (
    BodyFiles,
    LoadGeneratorError,
    LoadResult,
    require_h2load,
    require_wrk,
    run_h2load,
    run_wrk,
)
from bench.payloads import Payload, Protocol, build_payload
from bench.processes import ServerProcess, ServerStartError, http_request
from bench.report import render_markdown
from bench.systems import REPO_ROOT, System, SystemOptions, all_systems
from bench.targets import TARGET_POINTS, PointKey, as_dicts, evaluate_targets, median_or_none

BUSY_LOADAVG = 0.5  # a quiet 2-core machine idles well below this


@dataclass(frozen=True)
class Scenario:
    """What one load point sends: model, protocol and rows per request."""

    model: str
    protocol: Protocol
    rows: int


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def scenarios_for(
    system: System, models: list[str], row_counts: list[int], protocols: set[str] | None = None
) -> list[Scenario]:
    """The sweep for one system: everything it speaks; extra service workers get mnist 1-row."""
    extra_workers = "@" in system.name
    return [
        Scenario(model, protocol, rows)
        for model in models
        if model in system.models
        for protocol in system.protocols
        if protocols is None or protocol in protocols
        for rows in row_counts
        if not (system.name == "naive" and rows > 1)  # 64 rows through pydantic: minutes
        and not (extra_workers and (model != "mnist" or rows > 1))
    ]


def probe_grpc(server: ServerProcess, payload: Payload) -> str | None:
    """One ModelInfer with tritonclient.grpc: the load generator reads no gRPC status."""
    import numpy as np
    import tritonclient.grpc as triton_grpc
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest.FromString(payload.body[5:])
    shape = list(request.inputs[0].shape)
    image = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(shape)
    tensor = triton_grpc.InferInput("image", shape, "FP32")
    tensor.set_data_from_numpy(image)
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        result = client.infer(payload.model, [tensor], client_timeout=30)
    except Exception as error:  # tritonclient raises its own InferenceServerException
        return f"gRPC probe failed: {error}"
    finally:
        client.close()
    return None if result.get_response().outputs else "gRPC probe: no outputs"


def repository_models(repository: Path) -> tuple[str, ...]:
    if not repository.is_dir():
        return ()
    return tuple(sorted(p.name for p in repository.iterdir() if newest_version_dir(p) is not None))


def timed_import_tensorflow(python: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [python, "-c", "import tensorflow"], check=True, capture_output=True, timeout=300
    )
    return time.perf_counter() - started


def run_inprocess(
    python: str, model_dir: Path, model: str, seconds: float, ocr_width: int
) -> list[dict[str, Any]]:
    finished = subprocess.run(
        [
            python,
            "-m",
            "bench.inprocess",
            "--model-dir",
            str(model_dir),
            "--model",
            model,
            "--batch-sizes",
            "1,64",
            "--seconds",
            str(seconds),
            "--ocr-width",
            str(ocr_width),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    if finished.returncode != 0:
        raise RuntimeError(finished.stderr[-1500:])
    return [{"model": model, **row} for row in json.loads(finished.stdout)["results"]]


class Benchmark:
    """Holds the run's options and everything measured so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.raw = self.out / "raw" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.raw.mkdir(parents=True, exist_ok=True)
        self.bodies = BodyFiles()
        self.payloads: dict[Scenario, Payload] = {}
        self.points: list[dict[str, Any]] = []
        self.systems: dict[str, dict[str, Any]] = {}
        self.inprocess: list[dict[str, Any]] = []
        self.import_tensorflow: list[float] = []
        self.notes: list[str] = []

    def payload(self, scenario: Scenario) -> Payload:
        if scenario not in self.payloads:
            self.payloads[scenario] = build_payload(
                scenario.protocol, scenario.model, scenario.rows, self.args.ocr_width
            )
        return self.payloads[scenario]

    def probe(self, server: ServerProcess, payload: Payload) -> str | None:
        """One request before the load: a system that cannot answer it is not timed."""
        if payload.protocol == "grpc":
            return probe_grpc(server, payload)
        headers = {"Content-Type": payload.content_type}
        if payload.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(payload.header_length)
        status, body = http_request(server.port, "POST", payload.path, payload.body, headers)
        if status == 200:
            return None
        return f"probe answered {status}: {body[:300].decode(errors='replace')}"

    def measure_point(
        self, server: ServerProcess, scenario: Scenario, concurrency: int, round_number: int
    ) -> dict[str, Any]:
        payload = self.payload(scenario)
        cpu_before = server.cpu_seconds()
        result = self.load(server, payload, concurrency, self.args.duration)
        server_cpu = server.cpu_seconds() - cpu_before
        memory = server.memory()
        server.wait_until_idle()  # a backlog left by this point must not slow the next one
        point = {
            "system": server.name,
            "model": scenario.model,
            "protocol": scenario.protocol,
            "rows": scenario.rows,
            "concurrency": concurrency,
            "round": round_number,
            **asdict(result),
            "rows_per_s": result.requests_per_s * scenario.rows,
            "server_cpu_s": round(server_cpu, 3),
            "server_cpu_ms_per_request": round(1000 * server_cpu / result.requests, 3)
            if result.requests
            else None,
            "rss_mib": memory.rss_mib,
            "pss_mib": memory.pss_mib,
        }
        with (self.raw / "points.jsonl").open("a") as raw_file:
            raw_file.write(json.dumps(point) + "\n")
        log(
            f"  {server.name} {scenario.model} {scenario.protocol} rows={scenario.rows} "
            f"c={concurrency}: {result.requests_per_s:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, errors {result.status_errors + result.socket_errors}, "
            f"server CPU {server_cpu:.1f} s, load generator CPU {result.loadgen_cpu_s:.1f} s"
        )
        return point

    def load(
        self, server: ServerProcess, payload: Payload, concurrency: int, seconds: float
    ) -> LoadResult:
        """wrk for HTTP, h2load for gRPC (on the server's gRPC port)."""
        body = self.bodies.path_for(payload)
        if payload.protocol == "grpc":
            return run_h2load(
                f"http://127.0.0.1:{server.grpc_port}", payload, body, concurrency, seconds
            )
        return run_wrk(f"http://127.0.0.1:{server.port}", payload, body, concurrency, seconds)

    def run_system(
        self,
        system: System,
        options: SystemOptions,
        plan: list[tuple[Scenario, list[int]]],
        round_number: int,
    ) -> None:
        """Start `system`, run `plan` (scenario -> concurrencies) against it, stop it."""
        record = self.systems.setdefault(
            system.name,
            {
                "description": system.description,
                "status": "ok",
                "start_to_ready_s": [],
                "memory_idle": None,
                "memory_peak": None,
                "skipped": {},
            },
        )
        if system.unavailable:
            record["status"] = f"not run: {system.unavailable}"
            log(f"{system.name}: not run: {system.unavailable}")
            return
        server = system.server(self.raw, options)
        log(f"{system.name}: starting (round {round_number})")
        try:
            try:
                ready_s = server.start(self.args.ready_timeout)
            except ServerStartError as error:
                record["status"] = f"failed to start: {str(error)[:300]}"
                log(f"{system.name}: FAILED TO START; see {server.log_path}")
                return
            record["start_to_ready_s"].append(round(ready_s, 3))
            memory = server.memory()
            if record["memory_idle"] is None:
                record["memory_idle"] = asdict(memory)
            log(
                f"{system.name}: ready in {ready_s:.2f} s, {memory.pss_mib} MiB PSS "
                f"({memory.processes} processes)"
            )
            for scenario, concurrencies in plan:
                problem = self.probe(server, self.payload(scenario))
                if problem:
                    record["skipped"][f"{scenario.model}/{scenario.protocol}/{scenario.rows}"] = (
                        problem
                    )
                    log(f"  {system.name} {scenario}: skipped, {problem[:200]}")
                    continue
                if self.args.warmup > 0:
                    self.load(server, self.payload(scenario), 8, self.args.warmup)
                for concurrency in concurrencies:
                    try:
                        point = self.measure_point(server, scenario, concurrency, round_number)
                    except LoadGeneratorError as error:
                        log(f"  wrk failed: {error}")
                        continue
                    self.points.append(point)
                    peak = record["memory_peak"] or {"pss_mib": 0.0, "rss_mib": 0.0}
                    record["memory_peak"] = {
                        "pss_mib": max(peak["pss_mib"], point["pss_mib"]),
                        "rss_mib": max(peak["rss_mib"], point["rss_mib"]),
                    }
        finally:
            server.stop()

    def lookup(self, key: PointKey, metric: str) -> float | None:
        values = [
            p[metric]
            for p in self.points
            if (p["system"], p["model"], p["protocol"], p["rows"], p["concurrency"]) == key
        ]
        return median_or_none(values)

    def median_points(self) -> list[dict[str, Any]]:
        """One entry per point key: medians of numeric metrics over the rounds that ran it."""
        grouped: dict[PointKey, list[dict[str, Any]]] = defaultdict(list)
        for point in self.points:
            grouped[
                (
                    point["system"],
                    point["model"],
                    point["protocol"],
                    point["rows"],
                    point["concurrency"],
                )
            ].append(point)
        merged = []
        for runs in grouped.values():
            entry = dict(runs[0])
            for metric, value in runs[0].items():
                if isinstance(value, int | float) and metric not in (
                    "rows",
                    "concurrency",
                    "round",
                ):
                    entry[metric] = statistics.median(run[metric] for run in runs)
            entry["rounds"] = len(runs)
            del entry["round"]
            merged.append(entry)
        return merged


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 3 s per point, 0.5 s warm-up, 1 round"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--duration", type=float, default=None, help="seconds per point (10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds per scenario (1)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds for targets (3)")
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--rows", default="1,64", help="rows per request")
    parser.add_argument("--models", default="mnist,ocr", help="service models to load-test")
    parser.add_argument(
        "--protocols",
        default="tfs,v2json,v2bin,grpc",
        help="which protocols to send (comma list; grpc needs h2load)",
    )
    parser.add_argument(
        "--systems",
        default="service,unbatched,naive,pytriton,mlserver",
        help="which systems to run (comma list)",
    )
    parser.add_argument(
        "--service-workers",
        default="1,2",
        help="uvicorn worker counts for the service; extra counts run mnist "
        "1-row only (memory cost vs throughput)",
    )
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "models")
    parser.add_argument(
        "--mnist-dir",
        type=Path,
        default=None,
        help="SavedModel for baselines/peers/in-process (default: latest "
        "version under <model-repository>/mnist)",
    )
    parser.add_argument("--ocr-width", type=int, default=140)
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the systems, the plan and the expected duration; run nothing",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (3.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    args.repeats = args.repeats or (1 if quick else 3)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    protocols = set(args.protocols.split(","))
    if protocols - {"grpc"}:
        require_wrk()
    if "grpc" in protocols:
        require_h2load()
    started = datetime.now(UTC)
    loadavg_before = os.getloadavg()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    row_counts = [int(r) for r in args.rows.split(",")]
    service_models = repository_models(args.model_repository)
    mnist_dir = args.mnist_dir or newest_version_dir(args.model_repository / "mnist")
    if mnist_dir is None:
        sys.exit(
            f"no mnist SavedModel under {args.model_repository}/mnist; pass --mnist-dir "
            "(a stand-in: .venv/bin/python -m bench.standin_model /tmp/x/mnist/1)"
        )
    options = SystemOptions(
        args.model_repository.resolve(), Path(mnist_dir).resolve(), service_models
    )
    worker_counts = tuple(int(w) for w in args.service_workers.split(","))
    wanted = set(args.systems.split(","))
    systems = [s for s in all_systems(options, worker_counts) if s.name.split("@")[0] in wanted]
    models = [m for m in args.models.split(",")]
    if "service" in wanted and not set(models) <= set(service_models):
        missing = sorted(set(models) - set(service_models))
        note = f"models {missing} not in {args.model_repository}: service runs without them"
        log(note)
    sweep = {
        s.name: [(sc, concurrencies) for sc in scenarios_for(s, models, row_counts, protocols)]
        for s in systems
    }
    point_count = sum(len(plan) * len(concurrencies) for plan in sweep.values())
    target_count = sum(1 for t in TARGET_POINTS if t.system in sweep and t.protocol in protocols)
    estimate = (
        (point_count + target_count * (args.repeats - 1)) * (args.duration + 0.5)
        + sum(len(plan) for plan in sweep.values()) * args.warmup
        + 20 * len(systems) * args.repeats
    )
    log(
        f"{len(systems)} systems, {point_count} points + {target_count} target points x "
        f"{args.repeats - 1} extra rounds; expected about {estimate / 60:.0f} min"
    )
    for system in systems:
        status = f"not run: {system.unavailable}" if system.unavailable else "will run"
        scenario_names = ", ".join(
            f"{sc.model}/{sc.protocol}/{sc.rows}" for sc, _ in sweep[system.name]
        )
        log(f"  {system.name}: {status}; {scenario_names}")
    if args.dry_run:
        return
    bench = Benchmark(args)
    if os.getloadavg()[0] > BUSY_LOADAVG:
        log(f"load average {os.getloadavg()[0]:.2f}: the machine is busy, numbers are smoke tests")
    load_started = time.perf_counter()
    try:
        for round_number in range(1, args.repeats + 1):
            log(f"round {round_number}/{args.repeats}")
            bench.import_tensorflow.append(round(timed_import_tensorflow(sys.executable), 3))
            for model in ("mnist", "ocr"):
                model_dir = (
                    mnist_dir
                    if model == "mnist"
                    else newest_version_dir(args.model_repository / "ocr")
                )
                if model_dir is not None and (model == "mnist" or model in models):
                    bench.inprocess += [
                        {"round": round_number, **row}
                        for row in run_inprocess(
                            sys.executable,
                            Path(model_dir),
                            model,
                            max(2.0, args.duration / 2),
                            args.ocr_width,
                        )
                    ]
            for system in systems:
                if round_number == 1:
                    plan = sweep[system.name]
                else:
                    plan = [
                        (Scenario(t.model, t.protocol, t.rows), [t.concurrency])
                        for t in TARGET_POINTS
                        if t.system == system.name and t.protocol in protocols
                    ]
                if plan or round_number == 1:
                    bench.run_system(system, options, plan, round_number)
    except KeyboardInterrupt:
        bench.notes.append("interrupted: partial results")
        log("interrupted: writing partial results")
    finally:
        bench.bodies.cleanup()
    load_wall = time.perf_counter() - load_started
    write_results(bench, args, options, started, loadavg_before, concurrencies, load_wall)


def inprocess_medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[(row["model"], row["batch_size"])].append(row)
    return [
        {
            "model": model,
            "batch_size": batch,
            "median_ms": round(statistics.median(r["median_ms"] for r in runs), 3),
            "rows_per_s": round(statistics.median(r["rows_per_s"] for r in runs), 1),
            "rounds": len(runs),
        }
        for (model, batch), runs in grouped.items()
    ]


def write_results(
    bench: Benchmark,
    args: argparse.Namespace,
    options: SystemOptions,
    started: datetime,
    loadavg_before: tuple[float, float, float],
    concurrencies: list[int],
    load_wall: float,
) -> None:
    for record in bench.systems.values():
        ready_median = median_or_none(record["start_to_ready_s"])
        record["start_to_ready_s_median"] = None if ready_median is None else round(ready_median, 3)
    inprocess = inprocess_medians(bench.inprocess)
    inprocess_64 = next(
        (r["rows_per_s"] for r in inprocess if r["model"] == "mnist" and r["batch_size"] == 64),
        None,
    )
    service = bench.systems.get("service", {})
    import_tf = median_or_none(bench.import_tensorflow)
    import_tf = None if import_tf is None else round(import_tf, 3)
    targets = evaluate_targets(
        bench.lookup,
        inprocess_64,
        (service.get("memory_idle") or {}).get("rss_mib"),
        service.get("start_to_ready_s_median"),
        import_tf,
    )
    loadavg_after = os.getloadavg()
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "repeats": args.repeats,
        "concurrency": concurrencies,
        "model_repository": str(options.model_repository),
        "mnist_dir": str(options.mnist_dir),
        "service_models": list(options.service_models),
        "loadavg_before": [round(x, 2) for x in loadavg_before],
        "loadavg_after": [round(x, 2) for x in loadavg_after],
        "busy": loadavg_before[0] > BUSY_LOADAVG,
        "loadgen_cpu_s": sum(p["loadgen_cpu_s"] for p in bench.points),
        "load_wall_s": round(load_wall, 1),
        "raw": str(bench.raw),
    }
    results = {
        "meta": meta,
        "systems": bench.systems,
        "points": bench.median_points(),
        "rounds": bench.points,
        "inprocess": inprocess,
        "inprocess_rounds": bench.inprocess,
        "import_tensorflow_s": import_tf,
        "import_tensorflow_rounds": bench.import_tensorflow,
        "targets": as_dicts(targets),
        "notes": bench.notes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(render_markdown(results))
    log(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'} (raw logs: {bench.raw})")


if __name__ == "__main__":
    main()

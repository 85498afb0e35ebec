"""In-process micro-benchmark of the dynamic batcher (a script, not a test).

What it answers, without HTTP in the way:
- concurrency 1: the latency the batcher adds to a one-row request, against calling
  `servable.predict` directly and against the unbatched path (`run_in_executor` on a small pool);
- concurrency 32: requests/s and latency of the batcher against the unbatched path, with the
  default thread pool (what the tutorial server does) and with a 2-thread pool;
- optionally (`--ocr`) whether grouping similar widths beats padding everything to the widest.

Variants are run alternately (A, B, A, B, ...) and medians of the rounds are reported, because
the 2-core machine is shared. Usage:

    .venv/bin/python bench/batcher_overhead.py --model models/mnist/1 [--ocr models/ocr/1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.batching import BatchingOptions, DynamicBatcher, ServableLike  # noqa: E402
from app.servable import Servable  # noqa: E402

Tensors = dict[str, np.ndarray]
Call = Callable[[Tensors], Awaitable[Tensors]]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000.0


async def _drive(
    call: Call, make_input: Callable[[int], Tensors], concurrency: int, duration_s: float
) -> dict[str, float]:
    """`concurrency` closed-loop clients for `duration_s`; requests/s and latency in ms."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration_s

    async def client(seed: int) -> None:
        counter = seed
        while time.perf_counter() < stop_at:
            payload = make_input(counter)
            counter += concurrency
            began = time.perf_counter()
            await call(payload)
            latencies.append(time.perf_counter() - began)

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return _summary(latencies, elapsed, cpu)


def _summary(latencies: list[float], elapsed_s: float, cpu_s: float) -> dict[str, float]:
    """Requests/s, latency percentiles, and process CPU time per request: the CPU figure is
    what the batcher itself costs even when other jobs on the machine make wall time noisy."""
    return {
        "req_per_s": len(latencies) / elapsed_s,
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "cpu_us_per_req": cpu_s / max(len(latencies), 1) * 1e6,
    }


def _direct(
    servable: ServableLike, make_input: Callable[[int], Tensors], duration_s: float
) -> dict[str, float]:
    """The limit: `servable.predict` called in this thread, one request after the other."""
    latencies: list[float] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    stop_at = started + duration_s
    counter = 0
    while time.perf_counter() < stop_at:
        payload = make_input(counter)
        counter += 1
        began = time.perf_counter()
        servable.predict(payload)
        latencies.append(time.perf_counter() - began)
    return _summary(latencies, time.perf_counter() - started, time.process_time() - cpu_started)


def _executor_call(servable: ServableLike, pool: ThreadPoolExecutor) -> Call:
    async def call(inputs: Tensors) -> Tensors:
        return await asyncio.get_running_loop().run_in_executor(pool, servable.predict, inputs)

    return call


def _median_of(rounds: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        name: {key: round(statistics.median(r[key] for r in results), 3) for key in results[0]}
        for name, results in rounds.items()
    }


async def _compare(
    variants: dict[str, Callable[[], Awaitable[dict[str, float]]]], rounds: int
) -> dict[str, dict[str, float]]:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, measure in variants.items():
            results[name].append(await measure())
    return _median_of(results)


async def mnist_section(servable: Servable, duration_s: float, rounds: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    images = rng.random((256, 1, 28, 28, 1), dtype=np.float32)

    def one_row(i: int) -> Tensors:
        return {"image": images[i % len(images)]}

    small_pool = ThreadPoolExecutor(2, thread_name_prefix="unbatched")
    default_pool = ThreadPoolExecutor(32, thread_name_prefix="tutorial")  # asyncio's on 32 cores
    batchers = {
        threads: DynamicBatcher(servable, BatchingOptions(inference_threads=threads))
        for threads in (1, 2)
    }
    unbatched_small = _executor_call(servable, small_pool)
    unbatched_default = _executor_call(servable, default_pool)

    async def direct() -> dict[str, float]:
        return _direct(servable, one_row, duration_s)

    def driven(call: Call, concurrency: int) -> Callable[[], Awaitable[dict[str, float]]]:
        return lambda: _drive(call, one_row, concurrency, duration_s)

    concurrency_1 = await _compare(
        {
            "direct predict": direct,
            "unbatched (2-thread pool)": driven(unbatched_small, 1),
            "batcher (1 thread)": driven(batchers[1].submit, 1),
            "batcher (2 threads)": driven(batchers[2].submit, 1),
        },
        rounds,
    )
    concurrency_32 = await _compare(
        {
            "unbatched (32-thread pool)": driven(unbatched_default, 32),
            "unbatched (2-thread pool)": driven(unbatched_small, 32),
            "batcher (1 thread)": driven(batchers[1].submit, 32),
            "batcher (2 threads)": driven(batchers[2].submit, 32),
        },
        rounds,
    )
    for batcher in batchers.values():
        await batcher.close(5)
    small_pool.shutdown()
    default_pool.shutdown()
    base = concurrency_1["unbatched (2-thread pool)"]["p50_ms"]
    direct_p50 = concurrency_1["direct predict"]["p50_ms"]
    base_cpu = concurrency_1["unbatched (2-thread pool)"]["cpu_us_per_req"]
    direct_cpu = concurrency_1["direct predict"]["cpu_us_per_req"]
    added = {
        name: {
            "p50_vs_direct_us": round((r["p50_ms"] - direct_p50) * 1000, 1),
            "p50_vs_unbatched_us": round((r["p50_ms"] - base) * 1000, 1),
            "cpu_vs_direct_us": round(r["cpu_us_per_req"] - direct_cpu, 1),
            "cpu_vs_unbatched_us": round(r["cpu_us_per_req"] - base_cpu, 1),
        }
        for name, r in concurrency_1.items()
        if name.startswith("batcher")
    }
    return {
        "concurrency_1": concurrency_1,
        "batcher_added": added,
        "concurrency_32": concurrency_32,
    }


async def ocr_section(servable: Servable, duration_s: float, rounds: int) -> dict[str, object]:
    """Random strip widths 28..448 at concurrency 32: no padding, padding everything to the
    widest, or grouping similar widths."""
    rng = np.random.default_rng(1)
    widths = rng.integers(28, 449, size=256)
    images = [rng.random((1, 28, int(w), 1), dtype=np.float32) for w in widths]

    def strip(i: int) -> Tensors:
        return {"image": images[i % len(images)]}

    variants = {
        "no padding (equal widths only)": BatchingOptions(pad_variable_inputs=False),
        "pad to widest": BatchingOptions(group_widths=False),
        "group widths (ratio 1.5)": BatchingOptions(group_widths=True, max_pad_ratio=1.5),
        "group widths (ratio 2)": BatchingOptions(group_widths=True, max_pad_ratio=2.0),
    }
    batchers = {name: DynamicBatcher(servable, options) for name, options in variants.items()}
    result = await _compare(
        {
            name: (lambda b=b: _drive(b.submit, strip, 32, duration_s))
            for name, b in batchers.items()
        },
        rounds,
    )
    for batcher in batchers.values():
        await batcher.close(5)
    return {"concurrency_32_random_widths": result}


class _Spec:
    def __init__(self, shape: tuple[int | None, ...]) -> None:
        self.shape = shape
        self.dtype = np.dtype("float32")


class EchoServable:
    """No model at all: `predict` returns a view of its input. Timing the batcher around it
    gives the batcher's own cost, free of TensorFlow's variance on a busy machine."""

    name, version, metadata = "echo", 1, {}
    inputs = {"image": _Spec((None, 28, 28, 1))}
    outputs = {"pixel": _Spec((None,))}

    def predict(self, inputs: Tensors) -> Tensors:
        return {"pixel": inputs["image"][:, 0, 0, 0]}


async def machinery_section(duration_s: float, rounds: int) -> dict[str, object]:
    """Concurrency 1 on `EchoServable`: thread hand-off and bookkeeping, nothing else."""
    servable = EchoServable()
    image = {"image": np.zeros((1, 28, 28, 1), np.float32)}
    pool = ThreadPoolExecutor(2, thread_name_prefix="unbatched")
    batcher = DynamicBatcher(servable, BatchingOptions())
    unbatched = _executor_call(servable, pool)

    async def direct() -> dict[str, float]:
        return _direct(servable, lambda _: image, duration_s)

    result = await _compare(
        {
            "direct predict": direct,
            "unbatched (2-thread pool)": lambda: _drive(unbatched, lambda _: image, 1, duration_s),
            "batcher (2 threads)": lambda: _drive(batcher.submit, lambda _: image, 1, duration_s),
        },
        rounds,
    )
    await batcher.close(5)
    pool.shutdown()
    return {"concurrency_1_echo": result}


def _load(path: Path) -> Servable:
    name = path.parent.name
    return Servable.load(name, int(path.name) if path.name.isdigit() else 1, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/mnist/1"))
    parser.add_argument("--ocr", type=Path, default=None, help="also measure width grouping")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args()
    report: dict[str, object] = {
        "machinery": asyncio.run(machinery_section(args.duration, args.rounds)),
        "mnist": asyncio.run(mnist_section(_load(args.model), args.duration, args.rounds)),
    }
    if args.ocr is not None:
        report["ocr"] = asyncio.run(ocr_section(_load(args.ocr), args.duration, args.rounds))
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()

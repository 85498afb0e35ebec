"""The target ratios, computed from one run's medians.

Why separate: the table of targets is the contract; keeping it in one place makes it easy to
check against the issue, and the report only renders what this module decides.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PointKey = tuple[str, str, str, int, int]  # system, model, protocol, rows, concurrency
Lookup = Callable[[PointKey, str], float | None]


@dataclass(frozen=True)
class TargetPoint:
    """A load point a target reads; the benchmark repeats these in alternating rounds."""

    system: str
    protocol: str
    rows: int
    concurrency: int
    model: str = "mnist"

    @property
    def key(self) -> PointKey:
        return (self.system, self.model, self.protocol, self.rows, self.concurrency)


SERVICE_TFS_C1 = TargetPoint("service", "tfs", 1, 1)
UNBATCHED_TFS_C1 = TargetPoint("unbatched", "tfs", 1, 1)
SERVICE_V2JSON_C32 = TargetPoint("service", "v2json", 1, 32)
PYTRITON_V2JSON_C32 = TargetPoint("pytriton", "v2json", 1, 32)
SERVICE_V2BIN_C32 = TargetPoint("service", "v2bin", 1, 32)
SERVICE_V2BIN_64ROWS_C8 = TargetPoint("service", "v2bin", 64, 8)
SERVICE_TFS_C32 = TargetPoint("service", "tfs", 1, 32)
NAIVE_TFS_C32 = TargetPoint("naive", "tfs", 1, 32)
# gRPC (KServe v2 ModelInfer, raw tensors), driven by h2load.
SERVICE_GRPC_C1 = TargetPoint("service", "grpc", 1, 1)
SERVICE_V2BIN_C1 = TargetPoint("service", "v2bin", 1, 1)
SERVICE_GRPC_C32 = TargetPoint("service", "grpc", 1, 32)
PYTRITON_GRPC_C32 = TargetPoint("pytriton", "grpc", 1, 32)
SERVICE_GRPC_64ROWS_C8 = TargetPoint("service", "grpc", 64, 8)

TARGET_POINTS: tuple[TargetPoint, ...] = (
    SERVICE_TFS_C1,
    UNBATCHED_TFS_C1,
    SERVICE_V2JSON_C32,
    PYTRITON_V2JSON_C32,
    SERVICE_V2BIN_C32,
    SERVICE_V2BIN_64ROWS_C8,
    SERVICE_TFS_C32,
    NAIVE_TFS_C32,
    SERVICE_GRPC_C1,
    SERVICE_V2BIN_C1,
    SERVICE_GRPC_C32,
    PYTRITON_GRPC_C32,
    SERVICE_GRPC_64ROWS_C8,
)


@dataclass
class TargetResult:
    figure: str
    target: str
    measured: str
    ratio: float | None
    verdict: str  # "pass", "miss", "report", or "n/a: why"


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def judge(ratio: float | None, bound: float, at_least: bool) -> str:
    if ratio is None:
        return "n/a"
    ok = ratio >= bound if at_least else ratio <= bound
    return "pass" if ok else "miss"


def ratio_target(
    figure: str,
    target: str,
    numerator: float | None,
    denominator: float | None,
    bound: float,
    at_least: bool,
    unit: str,
) -> TargetResult:
    if numerator is None or denominator is None or denominator == 0:
        shown = " vs ".join(
            "not measured" if v is None else f"{v:,.2f}" for v in (numerator, denominator)
        )
        return TargetResult(figure, target, f"{shown} {unit}", None, "n/a")
    ratio = numerator / denominator
    measured = f"{numerator:,.2f} vs {denominator:,.2f} {unit} = {ratio:.2f}x"
    return TargetResult(figure, target, measured, round(ratio, 3), judge(ratio, bound, at_least))


def evaluate_targets(
    lookup: Lookup,
    inprocess_rows_per_s_64: float | None,
    service_rss_mib: float | None,
    start_to_ready_s: float | None,
    import_tensorflow_s: float | None,
) -> list[TargetResult]:
    """`lookup(point key, metric)` returns the median of that metric over the rounds."""
    results = [
        ratio_target(
            "concurrency 1: p50 latency, service TF Serving JSON / unbatched",
            "<= 1.05x",
            lookup(SERVICE_TFS_C1.key, "p50_ms"),
            lookup(UNBATCHED_TFS_C1.key, "p50_ms"),
            1.05,
            False,
            "ms",
        ),
        ratio_target(
            "concurrency 32: req/s, service v2 JSON / PyTriton v2 JSON",
            ">= 1.25x",
            lookup(SERVICE_V2JSON_C32.key, "requests_per_s"),
            lookup(PYTRITON_V2JSON_C32.key, "requests_per_s"),
            1.25,
            True,
            "req/s",
        ),
        ratio_target(
            "concurrency 32: p99, service v2 JSON / PyTriton v2 JSON",
            "<= 1.0x",
            lookup(SERVICE_V2JSON_C32.key, "p99_ms"),
            lookup(PYTRITON_V2JSON_C32.key, "p99_ms"),
            1.0,
            False,
            "ms",
        ),
        ratio_target(
            "concurrency 32: req/s, service v2 binary / PyTriton v2 JSON",
            ">= 1.5x",
            lookup(SERVICE_V2BIN_C32.key, "requests_per_s"),
            lookup(PYTRITON_V2JSON_C32.key, "requests_per_s"),
            1.5,
            True,
            "req/s",
        ),
        ratio_target(
            "64-row requests, v2 binary, concurrency 8: rows/s / in-process batch 64",
            ">= 0.7x",
            lookup(SERVICE_V2BIN_64ROWS_C8.key, "rows_per_s"),
            inprocess_rows_per_s_64,
            0.7,
            True,
            "rows/s",
        ),
        ratio_target(
            "concurrency 32: req/s, service TF Serving JSON / naive",
            ">= 50x",
            lookup(SERVICE_TFS_C32.key, "requests_per_s"),
            lookup(NAIVE_TFS_C32.key, "requests_per_s"),
            50.0,
            True,
            "req/s",
        ),
        ratio_target(
            "gRPC, concurrency 32: req/s, service / PyTriton gRPC",
            ">= 1.25x",
            lookup(SERVICE_GRPC_C32.key, "requests_per_s"),
            lookup(PYTRITON_GRPC_C32.key, "requests_per_s"),
            1.25,
            True,
            "req/s",
        ),
        ratio_target(
            "gRPC, concurrency 32: p99, service / PyTriton gRPC",
            "<= 1.0x",
            lookup(SERVICE_GRPC_C32.key, "p99_ms"),
            lookup(PYTRITON_GRPC_C32.key, "p99_ms"),
            1.0,
            False,
            "ms",
        ),
        ratio_target(
            "concurrency 1: p50 latency, service gRPC / service v2 binary",
            "<= 1.0x",
            lookup(SERVICE_GRPC_C1.key, "p50_ms"),
            lookup(SERVICE_V2BIN_C1.key, "p50_ms"),
            1.0,
            False,
            "ms",
        ),
        ratio_target(
            "64-row requests, gRPC, concurrency 8: rows/s / in-process batch 64",
            ">= 0.8x",
            lookup(SERVICE_GRPC_64ROWS_C8.key, "rows_per_s"),
            inprocess_rows_per_s_64,
            0.8,
            True,
            "rows/s",
        ),
    ]
    memory_verdict = (
        "n/a"
        if service_rss_mib is None
        else ("report (goal met)" if service_rss_mib < 1024 else "report (goal missed)")
    )
    results.append(
        TargetResult(
            "resident memory (RSS) with the models loaded and warmed up, one worker",
            "report; goal < 1 GiB",
            "not measured" if service_rss_mib is None else f"{service_rss_mib:,.0f} MiB",
            None,
            memory_verdict,
        )
    )
    startup = ratio_target(
        "start to ready (all models, warm-up included) / import tensorflow",
        "report; goal < 1.5x",
        start_to_ready_s,
        import_tensorflow_s,
        1.5,
        False,
        "s",
    )
    startup.verdict = {"pass": "report (goal met)", "miss": "report (goal missed)"}.get(
        startup.verdict, startup.verdict
    )
    results.append(startup)
    return results


def as_dicts(results: list[TargetResult]) -> list[dict[str, Any]]:
    return [vars(result) for result in results]

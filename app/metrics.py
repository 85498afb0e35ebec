"""Prometheus metrics: one `ServiceMetrics` per app, in its own `CollectorRegistry`.

Why a per-app registry and not prometheus_client's global one: tests build several apps in one
process, and a global registry would refuse the second set of collectors.

Hot-path cost is kept to what cannot be avoided: per request one counter increment and one
histogram observation (the observability middleware); per batch three observations (the
batcher's observer, with label children bound once per loaded version). Everything that can be
read when Prometheus scrapes is read then, not maintained on every request: queue depth, loaded
versions, process memory and GPU memory come from `StateCollector` at scrape time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

PREFIX = "kerasserve"
# Seconds: from 0.5 ms (one small CPU call) to 30 s (the default request timeout).
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LOAD_TIME_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# (model, version, state, queued_rows or None) for every version the registry knows.
VersionSnapshot = tuple[str, int, str, int | None]


class ServiceMetrics:
    """Every collector of one app; `registry` is what `/metrics` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests by model, version, protocol and status code",
            ["model", "version", "protocol", "code"],
            registry=r,
        )
        self.request_latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Total time from request start to the last response byte, by model and protocol",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            f"{PREFIX}_queue_duration_seconds",
            "Time the oldest request of a batch waited in the batcher's queue",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_time = Histogram(
            f"{PREFIX}_compute_duration_seconds",
            "Time of one servable call (one batch)",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size_rows",
            "Rows per servable call",
            ["model", "version"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            f"{PREFIX}_batcher_rejected",
            "Requests failed by the batcher without running",
            ["model", "version", "reason"],
            registry=r,
        )
        self.load_time = Histogram(
            f"{PREFIX}_model_load_duration_seconds",
            "Time to load and warm up one model version",
            ["model"],
            buckets=LOAD_TIME_BUCKETS,
            registry=r,
        )
        self.load_failures = Counter(
            f"{PREFIX}_model_load_failures",
            "Model versions that failed to load",
            ["model"],
            registry=r,
        )
        self.config_reloads = Counter(
            f"{PREFIX}_repository_config_reloads",
            "Repository config file reads, by result (ok or error)",
            ["result"],
            registry=r,
        )
        self.repository_errors = Counter(
            f"{PREFIX}_repository_errors",
            "Repository faults as they appear (unreadable_entry, invalid_entry, scan_failed, "
            "config_invalid, config_missing, model_pass_failed, pass_failed, "
            "version_folder_removed)",
            ["kind"],
            registry=r,
        )
        self.state = StateCollector()
        r.register(self.state)
        # (model, version, protocol, code) -> bound children: skips labels() on the hot path.
        self._request_children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}
        self._rejected_labels: set[tuple[str, str, str]] = set()  # (model, version, reason)

    def batch_observer(self, model: str, version: int) -> BatchMetrics:
        """An observer for one version's `DynamicBatcher` (label children bound once)."""
        return BatchMetrics(self, model, str(version))

    def count_rejected(self, model: str, version: str, reason: str) -> None:
        """A request the batcher failed without running (rare: labels() each time is fine)."""
        self.rejected.labels(model, version, reason).inc()
        self._rejected_labels.add((model, version, reason))

    def forget_version(self, model: str, version: int) -> None:
        """Drop the series of a version that was unloaded.

        Why: every version adds its own label children (three batch histograms, a request
        counter per protocol and status code: about 60 lines, 5.5 kB of `/metrics` for a version
        served on five protocols), and a retired version's never change again. A server given a
        new version every 30 s, as the soak does, would otherwise carry 2,880 retired versions'
        series a day, in memory and in every scrape. A version loaded again starts its counters
        from zero: Prometheus reads that as a counter reset, as after a restart.
        """
        labels = (model, str(version))
        for histogram in (self.queue_time, self.compute_time, self.batch_size):
            with contextlib.suppress(KeyError):
                histogram.remove(*labels)
        for rejected in [key for key in self._rejected_labels.copy() if key[:2] == labels]:
            self._rejected_labels.discard(rejected)
            with contextlib.suppress(KeyError):
                self.rejected.remove(*rejected)
        # copy(): one C call, safe while another thread adds a child; iterating the dict is not.
        for key in [key for key in self._request_children.copy() if key[:2] == labels]:
            self._request_children.pop(key, None)
            with contextlib.suppress(KeyError):
                self.requests.remove(*key[:3], str(key[3]))

    def observe_request(
        self, model: str, version: str, protocol: str, code: int, seconds: float
    ) -> None:
        """One finished HTTP request: a counter increment and a histogram observation."""
        key = (model, version, protocol, code)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(model, version, protocol, str(code)),
                self.request_latency.labels(model, protocol),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class BatchMetrics:
    """`app.batching.BatchObserver` for one version; thread-safe like the collectors."""

    __slots__ = ("_batch_size", "_compute", "_metrics", "_model", "_queue", "_version")

    def __init__(self, metrics: ServiceMetrics, model: str, version: str) -> None:
        self._metrics = metrics
        self._model = model
        self._version = version
        self._queue = metrics.queue_time.labels(model, version)
        self._compute = metrics.compute_time.labels(model, version)
        self._batch_size = metrics.batch_size.labels(model, version)

    def on_batch(self, rows: int, requests: int, queue_wait_s: float, compute_s: float) -> None:
        self._batch_size.observe(rows)
        self._queue.observe(queue_wait_s)
        self._compute.observe(compute_s)

    def on_rejected(self, reason: str) -> None:
        self._metrics.count_rejected(self._model, self._version, reason)


class StateCollector(Collector):
    """Gauges read at scrape time: versions by state, queue depth, memory."""

    def __init__(self) -> None:
        self._versions: Callable[[], Iterable[VersionSnapshot]] = tuple
        self._gpu_memory: Callable[[], dict[str, int]] = dict
        self._problems: Callable[[], dict[str, int]] = dict

    def watch(
        self,
        versions: Callable[[], Iterable[VersionSnapshot]],
        gpu_memory: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        """Where to read the registry's versions and (when a GPU is present) GPU memory."""
        self._versions = versions
        if gpu_memory is not None:
            self._gpu_memory = gpu_memory

    def watch_problems(self, problems: Callable[[], dict[str, int]]) -> None:
        """Where to read the repository faults known now, counted by kind."""
        self._problems = problems

    def describe(self) -> list[Metric]:
        return []  # dynamic: nothing to check for name clashes at registration

    def collect(self) -> Iterator[Metric]:
        loaded = GaugeMetricFamily(
            f"{PREFIX}_model_versions",
            "Known model versions by state (AVAILABLE: serving)",
            labels=["model", "state"],
        )
        queue = GaugeMetricFamily(
            f"{PREFIX}_queue_depth_rows",
            "Rows waiting in a version's batcher queue",
            labels=["model", "version"],
        )
        counts: dict[tuple[str, str], int] = {}
        for model, version, state, queued in self._versions():
            counts[(model, state)] = counts.get((model, state), 0) + 1
            if queued is not None:
                queue.add_metric([model, str(version)], queued)
        for (model, state), count in sorted(counts.items()):
            loaded.add_metric([model, state], count)
        yield loaded
        yield queue
        memory = GaugeMetricFamily(
            f"{PREFIX}_process_resident_memory_bytes", "Resident memory of the server process"
        )
        memory.add_metric([], resident_memory_bytes())
        yield memory
        gpu = GaugeMetricFamily(
            f"{PREFIX}_gpu_memory_in_use_bytes",
            "GPU memory allocated by TensorFlow, per device",
            labels=["device"],
        )
        for device, used in self._gpu_memory().items():
            gpu.add_metric([device], used)
        yield gpu
        problems = GaugeMetricFamily(
            f"{PREFIX}_repository_problems",
            "Repository faults present now, by kind",
            labels=["kind"],
        )
        for kind, count in sorted(self._problems().items()):
            problems.add_metric([kind], count)
        yield problems


def resident_memory_bytes() -> int:
    """RSS from /proc (Linux); 0 where that is not available."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0

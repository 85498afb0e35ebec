"""How requests reach a servable: the runner interface and the unbatched runner.

The registry builds one runner per loaded version. `UnbatchedRunner` calls `servable.predict`
once per request in a small bounded thread pool; `app.batching.DynamicBatcher` (same interface)
merges concurrent requests. Either way TensorFlow never runs on the event loop and never in an
unbounded pool: more than a few TensorFlow calls at once on two cores only adds latency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from app.batching import BatchingOptions, BatchObserver, DynamicBatcher
from app.errors import Unavailable
from app.servable import Servable

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]


class Runner(Protocol):
    """What the data plane awaits; inputs are already validated against the signature."""

    async def submit(self, inputs: Tensors) -> Tensors: ...

    async def close(self, drain_timeout_s: float) -> None: ...


RunnerFactory = Callable[[Servable, BatchingOptions], Runner]


class UnbatchedRunner:
    """One `predict` per request on at most `threads` worker threads."""

    def __init__(self, servable: Servable, threads: int = 2) -> None:
        self._servable = servable
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"infer-{servable.name}-{servable.version}"
        )
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    async def submit(self, inputs: Tensors) -> Tensors:
        if self._closed:
            raise Unavailable(f"model {self._servable.name!r} version "
                              f"{self._servable.version} is unloading")
        self._in_flight += 1
        self._idle.clear()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._servable.predict, inputs)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def close(self, drain_timeout_s: float) -> None:
        """Refuse new work, wait up to `drain_timeout_s` for running calls, free the threads."""
        self._closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=drain_timeout_s)
        except TimeoutError:
            log.warning("%s version %d: %d calls still running after %.1f s drain",
                        self._servable.name, self._servable.version, self._in_flight,
                        drain_timeout_s)
        self._executor.shutdown(wait=False, cancel_futures=True)


def build_runner(servable: Servable, options: BatchingOptions,
                 observer: BatchObserver | None = None) -> Runner:
    """The dynamic batcher when batching is enabled and available, else the unbatched runner.

    `observer` (metrics) sees every batch the dynamic batcher runs.
    """
    if options.enabled:
        return DynamicBatcher(servable, options, observer)
    return UnbatchedRunner(servable, threads=options.inference_threads)

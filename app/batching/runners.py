"""How requests reach a servable: the runner interface and the unbatched runner.

The registry builds one runner per loaded version. `UnbatchedRunner` calls `servable.predict`
once per request in a small bounded thread pool; `app.batching.DynamicBatcher` (same interface)
merges concurrent requests. Either way TensorFlow never runs on the event loop and never in an
unbounded pool: more than a few TensorFlow calls at once on two cores only adds latency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from app.batching import BatchingOptions, BatchObserver, DynamicBatcher
from app.errors import ClientClosedRequest, DeadlineExceeded, Unavailable
from app.servable import Servable

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]


class Runner(Protocol):
    """What the data plane awaits; inputs are already validated against the signature."""

    async def submit(
        self,
        inputs: Tensors,
        *,
        timeout_s: float | None = None,
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> Tensors: ...

    async def close(self, drain_timeout_s: float) -> None: ...


RunnerFactory = Callable[[Servable, BatchingOptions], Runner]


class UnbatchedRunner:
    """One `predict` per request on at most `threads` worker threads."""

    def __init__(self, servable: Servable, threads: int = 2) -> None:
        self._servable = servable
        self._threads = threads
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"infer-{servable.name}-{servable.version}"
        )
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    async def submit(
        self,
        inputs: Tensors,
        *,
        timeout_s: float | None = None,
        client_gone: Callable[[], Awaitable[object]] | None = None,
        signature: str | None = None,
    ) -> Tensors:
        """Like the batcher's: a deadline, and work still waiting for a thread is dropped when
        `client_gone` returns (watched only when every thread is busy). `signature`: run that
        signature of the servable instead of `serving_default` (`signature_runner`)."""
        if self._closed:
            raise Unavailable(
                f"model {self._servable.name!r} version {self._servable.version} is unloading"
            )
        busy = self._in_flight >= self._threads
        self._in_flight += 1
        self._idle.clear()
        try:
            loop = asyncio.get_running_loop()
            if signature is None:
                work = loop.run_in_executor(self._executor, self._servable.predict, inputs)
            else:
                work = loop.run_in_executor(
                    self._executor, self._servable.predict, inputs, signature
                )
            if timeout_s is None and not (busy and client_gone is not None):
                return await work
            return await _first_of(
                work, timeout_s, client_gone if busy else None, self._servable.name
            )
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
            log.warning(
                "%s version %d: %d calls still running after %.1f s drain",
                self._servable.name,
                self._servable.version,
                self._in_flight,
                drain_timeout_s,
            )
        self._executor.shutdown(wait=False, cancel_futures=True)


async def _first_of(
    work: asyncio.Future[Tensors],
    timeout_s: float | None,
    client_gone: Callable[[], Awaitable[object]] | None,
    model: str,
) -> Tensors:
    """`work`'s result, unless the deadline passes or the client goes first (then the work is
    cancelled: dropped if it has not started; a running call's result is discarded)."""
    waiters: set[asyncio.Future[object]] = {work}  # type: ignore[arg-type]
    gone = asyncio.ensure_future(client_gone()) if client_gone is not None else None
    if gone is not None:
        waiters.add(gone)
    try:
        done, _ = await asyncio.wait(
            waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    except asyncio.CancelledError:
        work.cancel()  # the caller was cancelled: drop the work if it has not started
        raise
    finally:
        if gone is not None:
            gone.cancel()
    if work in done:
        return work.result()
    work.cancel()
    if gone is not None and gone in done:
        raise ClientClosedRequest(f"the client of a request to model {model!r} went away")
    raise DeadlineExceeded(f"model {model!r} did not answer within {timeout_s:g} s")


def signature_runner(servable: Servable, options: BatchingOptions) -> UnbatchedRunner | None:
    """The runner of a version's signatures other than `serving_default` (None: it has none).

    Unbatched, on its own `inference_threads` threads (made only when a request comes): only
    `serving_default` is batched. A batcher per signature would keep that many more threads
    calling TensorFlow at once on the same cores, and the batcher's padding plan (`time_stride`,
    `pad_value` in `metadata.json`) describes the default signature's inputs only.
    """
    if len(servable.signatures) < 2:
        return None
    return UnbatchedRunner(servable, threads=options.inference_threads)


def build_runner(
    servable: Servable, options: BatchingOptions, observer: BatchObserver | None = None
) -> Runner:
    """The dynamic batcher when batching is enabled and available, else the unbatched runner.

    `observer` (metrics) sees every batch the dynamic batcher runs.
    """
    if options.enabled:
        return DynamicBatcher(servable, options, observer)
    return UnbatchedRunner(servable, threads=options.inference_threads)

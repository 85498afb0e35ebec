"""Per-model dynamic batcher: merge concurrent requests into one call of the serving function.

Why it exists: on this 2-core machine a SavedModel call costs about 0.5 ms at batch 1 and only
about 2 ms at batch 32, and thirty TensorFlow calls running at once in a thread pool fight for the
cores (p99 190 ms at concurrency 32). So requests wait in one bounded queue per model and a small,
fixed number of inference threads turn whatever is queued into one `servable.predict` call.

Policy (the reasons are in the docstrings below):
- A worker that finds requests queued takes them at once (FIFO, up to `max_batch_size` rows).
  It waits up to `max_batch_delay_us` for more rows only while another batch of this model is
  computing, i.e. only when the cores are busy anyway. At low load nothing is in flight, so a lone
  request runs immediately: the idle path costs one thread hand-off, like a thread pool
  (measured with a no-op model: 101 against 90 us round trip, +10 us CPU per request).
- A request with more rows than `max_batch_size` runs alone, unsplit, unless it has more than
  `max_rows_per_call` rows: then it runs in slices of that many rows whose outputs are
  concatenated. The model's working memory grows with the rows of a call (mnist's activations
  take about 250 KB a row, 80 times its input), so a 24 MB request of 3,220 rows cost +853 MB
  in one call; sliced, it costs what a batch of `max_rows_per_call` rows costs.
- The queue is bounded in rows (`max_queued_rows`) and in bytes of input (`max_queued_bytes`):
  a request that does not fit is refused at once with `QueueFull` (429). A request larger than
  the whole bound is still admitted when the queue is empty, so it is never refused forever
  (the body and tensor limits bound it).
- Every request has a deadline (`timeout_s`, queue wait plus compute). At the deadline it fails
  with `DeadlineExceeded` (504) at once; if its work had not started, it is dropped from the
  queue and never runs (a running call cannot be interrupted; its result is discarded).
  A cancelled caller (client gone) drops its queued work the same way. A caller may bring its
  own shorter deadline (`submit(timeout_s=...)`, e.g. a gRPC deadline), and a `client_gone`
  awaitable (an HTTP disconnect): it is only watched when the request queues behind at least a
  full batch of rows (so an idle or lightly loaded server pays nothing for it); when it fires,
  queued work is dropped and the request fails with `ClientClosedRequest` (499).
- If a merged call fails, every member is re-run on its own, so an error fails only the requests
  whose input caused it.
- Inputs with variable non-batch dimensions (the OCR width) are padded to the widest in the batch
  with the model's `pad_value` (metadata; a model without one, or `pad_variable_inputs=False`,
  merges identical shapes only);
  outputs with a variable non-batch dimension are cut back per request to
  `ceil(W_i / time_stride)` (metadata). With `group_widths`, a batch only takes requests whose
  widths are within `max_pad_ratio` of each other (widest / narrowest), so a narrow strip is
  never padded to a wide one's cost; the others wait for the next batch. A model whose variable
  output cannot be cut back this way runs every request alone.
- `close` refuses new work (`Unavailable`, 503), lets queued and running work finish within the
  drain timeout, fails what is left with `Unavailable`, and stops the threads.

Futures are resolved on the event loop with one `call_soon_threadsafe` per batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable

from app.batching.execution import BatchExecution, Outcome, resolve_soon
from app.batching.options import BatchingOptions, BatchObserver, ServableLike, Tensors
from app.batching.padding import describe, padding_plan, variable_axes
from app.batching.queue import DROPPED, QUEUED, RUNNING, QueuedRequest, pop_live, take_compatible
from app.errors import ClientClosedRequest, DeadlineExceeded, QueueFull, Unavailable

log = logging.getLogger(__name__)


class DynamicBatcher:
    """Merge concurrent `submit` calls for one servable into batched `predict` calls.

    Longer than the project's ~200 lines for a reason: admission (`submit`), deadlines and
    cancellation (`_expire`, `_drop`), the drain (`close`) and the inference threads' wait for
    a batch (`_worker`, `_next_batch`) all read and change the same queue, counters and request
    states under one lock and its two conditions; split into classes they would share that lock
    and state through each other's internals. What needs no lock of its own is elsewhere: the
    request record and which queued requests form a batch (`app.batching.queue`, called under
    this lock), running a formed batch and handing its outcomes back
    (`app.batching.execution`), padding, merge and split (`app.batching.padding`).
    """

    def __init__(
        self,
        servable: ServableLike,
        options: BatchingOptions,
        observer: BatchObserver | None = None,
    ) -> None:
        self.servable = servable
        self.options = options
        self._observer = observer
        plan, mergeable = padding_plan(servable, options.pad_variable_inputs)
        self._plan = plan
        self._execution = BatchExecution(
            servable, plan, mergeable, options.max_rows_per_call, observer
        )
        self._max_rows = options.max_batch_size if mergeable else 1
        # With variable input shapes, requests that can merge may sit behind ones that cannot:
        # batch formation then scans ahead instead of stopping at the first misfit.
        self._look_ahead = any(variable_axes(spec.shape) for spec in servable.inputs.values())
        self._delay_s = options.max_batch_delay_us / 1e6
        self._queue: deque[QueuedRequest] = deque()
        self._queued_rows = 0
        self._queued_bytes = 0
        self._in_flight = 0
        self._filling = 0  # workers waiting for a fuller batch while another one computes
        self._closing = False
        self._stopping = False
        # One lock, two conditions: workers wait for work on `_cond`, `close` waits on `_idle`
        # for the queue to empty (one shared condition could hand a wake-up to the wrong one).
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._idle = threading.Condition(lock)
        self._threads = [
            threading.Thread(
                target=self._worker,
                daemon=True,
                name=f"infer-{servable.name}-{servable.version}-{i}",
            )
            for i in range(options.inference_threads)
        ]
        for thread in self._threads:
            thread.start()

    # ----------------------------------------------------------------- event-loop side

    @property
    def queued_rows(self) -> int:
        """Rows waiting for an inference thread (running work is not counted)."""
        return self._queued_rows

    async def submit(
        self,
        inputs: Tensors,
        *,
        timeout_s: float | None = None,
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> Tensors:
        """Queue one request (any number of rows) and return its own outputs.

        Raises `QueueFull` at once when the queue bound would be exceeded, `DeadlineExceeded`
        after `timeout_s` (the shorter of the caller's and the model's), `ClientClosedRequest`
        when `client_gone` returns before the work started, `Unavailable` once `close` has
        begun, and whatever the servable raises for this request's input.
        """
        if self._closing:
            self._reject("closing")
            raise Unavailable(
                f"model '{self.servable.name}' version {self.servable.version} "
                "is unloading or the server is shutting down"
            )
        rows, key, extent = describe(inputs, self._plan)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Tensors] = loop.create_future()
        request = QueuedRequest(inputs, rows, key, extent, future, loop)
        options = self.options
        with self._cond:
            queued, queued_bytes = self._queued_rows, self._queued_bytes
            # Behind at least a batch's worth of rows, it waits for more than the next batch.
            behind = queued >= self._max_rows
            if queued and (
                queued + rows > options.max_queued_rows
                or queued_bytes + request.nbytes > options.max_queued_bytes
            ):
                full = True
            else:
                full = False
                self._queue.append(request)
                self._queued_rows = queued + rows
                self._queued_bytes = queued_bytes + request.nbytes
                self._cond.notify()
        if full:
            self._reject("queue_full")
            raise QueueFull(
                f"model '{self.servable.name}' has {queued} rows ({queued_bytes} bytes) queued; "
                f"the limits are {options.max_queued_rows} rows and {options.max_queued_bytes} "
                "bytes: retry later"
            )
        limit = options.timeout_s if timeout_s is None else min(timeout_s, options.timeout_s)
        timer = loop.call_later(limit, self._expire, request, limit)
        # Watched only when the request waits behind a full batch or more: a watcher task costs
        # 10-30 us of event-loop time, which a request that goes with the next batch (the
        # steady state up to `max_batch_size` rows queued) or at once (idle) need not pay.
        watcher: asyncio.Future[object] | None = (
            asyncio.ensure_future(client_gone(), loop=loop)
            if client_gone is not None and behind
            else None
        )
        if watcher is not None:
            watcher.add_done_callback(lambda task: self._on_client_gone(request, task))
        try:
            return await future
        except asyncio.CancelledError:
            self._drop(request)  # the caller was cancelled: do not compute for nobody
            raise
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()

    def _expire(self, request: QueuedRequest, limit_s: float) -> None:
        """Deadline timer (event loop): drop the work if it has not started, answer 504."""
        dropped = self._drop(request)
        if not request.future.done():
            self._reject("deadline")
            where = "in the queue" if dropped else "while running"
            request.future.set_exception(
                DeadlineExceeded(
                    f"model '{self.servable.name}' did not answer within "
                    f"{limit_s:g} s (timed out {where})"
                )
            )

    def _on_client_gone(self, request: QueuedRequest, watcher: asyncio.Future[object]) -> None:
        """The `client_gone` watcher ended (event loop); cancelled means the request ended."""
        if watcher.cancelled() or watcher.exception() is not None:
            return
        self._abandon(request)

    def _abandon(self, request: QueuedRequest) -> None:
        """The client went away: drop queued work; running work's result is discarded."""
        if request.future.done():
            return
        if self._drop(request):
            self._reject("client_gone")
        request.future.set_exception(
            ClientClosedRequest(
                f"the client of a request to model '{self.servable.name}' went away"
            )
        )

    def _drop(self, request: QueuedRequest) -> bool:
        """Take a queued request out of the count; the worker skips it. True if it was queued."""
        with self._cond:
            if request.state != QUEUED:
                return False
            request.state = DROPPED
            self._queued_rows -= request.rows
            self._queued_bytes -= request.nbytes
            self._idle.notify_all()
        return True

    def _reject(self, reason: str) -> None:
        if self._observer is not None:
            self._observer.on_rejected(reason)

    async def close(self, drain_timeout_s: float) -> None:
        """Refuse new work, finish queued and running work (at most `drain_timeout_s`), fail
        what is left with `Unavailable`, and stop the inference threads."""
        self._closing = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._wait_idle, drain_timeout_s)
        leftovers: list[QueuedRequest] = []
        with self._cond:
            self._stopping = True
            while self._queue:
                request = self._queue.popleft()
                if request.state == QUEUED:
                    request.state = DROPPED
                    leftovers.append(request)
            self._queued_rows = 0
            self._queued_bytes = 0
            self._cond.notify_all()
        for request in leftovers:
            if not request.future.done():
                request.future.set_exception(
                    Unavailable(
                        f"model '{self.servable.name}' shut down before this request could run"
                    )
                )
        await loop.run_in_executor(None, self._join_threads, max(drain_timeout_s, 1.0))

    def _wait_idle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queued_rows or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning(
                        "model '%s': drain timed out with %d rows queued, %d running",
                        self.servable.name,
                        self._queued_rows,
                        self._in_flight,
                    )
                    return
                self._idle.wait(remaining)

    def _join_threads(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # ----------------------------------------------------------------- inference threads

    def _worker(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            outcomes: list[Outcome] = []
            try:
                outcomes = self._execution.run(batch)
            finally:
                # Leave the in-flight count before waking the clients: a client that submits
                # again at once must find nothing in flight, or its request would wait for a
                # fuller batch that is not coming.
                with self._cond:
                    self._in_flight -= 1
                    if self._filling:  # a worker waiting for a fuller batch may go now
                        self._cond.notify_all()
                    if not self._in_flight:
                        self._idle.notify_all()
                resolve_soon(outcomes)

    def _next_batch(self) -> list[QueuedRequest] | None:
        """Block until there is work; return the next batch (marked running) or None to stop."""
        with self._cond:
            while True:
                head = pop_live(self._queue)
                if head is None:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                batch = [head]
                rows = head.rows
                if rows < self._max_rows:
                    rows = self._take_compatible(batch, rows)
                    # Wait for more rows only while another batch is computing: the cores are
                    # busy then anyway, and a fuller batch costs almost nothing extra. With
                    # nothing in flight the batch goes at once (no fixed delay at low load).
                    if self._in_flight and self._delay_s:
                        give_up = time.monotonic() + self._delay_s
                        self._filling += 1
                        while rows < self._max_rows and self._in_flight and not self._stopping:
                            remaining = give_up - time.monotonic()
                            if remaining <= 0:
                                break
                            self._cond.wait(remaining)
                            rows = self._take_compatible(batch, rows)
                        self._filling -= 1
                        # Members may have timed out or been cancelled while we waited.
                        batch = [r for r in batch if r.state == QUEUED]
                        rows = sum(r.rows for r in batch)
                if batch:
                    break
            for request in batch:
                request.state = RUNNING
                self._queued_bytes -= request.nbytes
            self._queued_rows -= rows
            self._in_flight += 1
            queued_now = self._queued_rows
            if not queued_now:
                self._idle.notify_all()
        return batch

    def _take_compatible(self, batch: list[QueuedRequest], rows: int) -> int:
        options = self.options
        return take_compatible(
            self._queue,
            batch,
            rows,
            self._max_rows,
            self._look_ahead,
            options.group_widths,
            options.max_pad_ratio,
        )

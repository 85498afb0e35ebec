"""Running a formed batch: one servable call (merged, or sliced for a large lone request), the
split of its outputs, the one-by-one retry when a merged call fails, and the hand-back of each
outcome to the event loop that waits for it.

Runs on the batcher's inference threads without its lock: a batch, once formed, belongs to the
thread that runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import numpy as np

from app.batching.options import BatchObserver, ServableLike, Tensors
from app.batching.padding import PaddingPlan, merge, split
from app.batching.queue import QueuedRequest

log = logging.getLogger(__name__)

Outcome = tuple[QueuedRequest, Tensors | BaseException]


class BatchExecution:
    """Calls one servable for formed batches; outcomes in the batch's order."""

    def __init__(
        self,
        servable: ServableLike,
        plan: PaddingPlan | None,
        mergeable: bool,
        max_rows_per_call: int,
        observer: BatchObserver | None,
    ) -> None:
        self.servable = servable
        self._plan = plan
        self._mergeable = mergeable
        self._max_rows_per_call = max_rows_per_call
        self._observer = observer

    def run(self, batch: list[QueuedRequest]) -> list[Outcome]:
        """Call the servable for the batch and split the results: one outcome per request."""
        started = time.monotonic()
        outcomes: list[Outcome]
        try:
            if len(batch) == 1:
                outcomes = [(batch[0], self._predict_rows(batch[0]))]
            else:
                merged = merge([r.inputs for r in batch], self._plan)
                parts = split(
                    [(r.rows, r.extent) for r in batch], self.servable.predict(merged), self._plan
                )
                outcomes = list(zip(batch, parts, strict=True))
        except Exception as exc:  # handed to the requests, never lost
            if len(batch) == 1:
                outcomes = [(batch[0], exc)]
            else:
                log.info(
                    "model '%s': merged call of %d requests failed (%s); running them one by one",
                    self.servable.name,
                    len(batch),
                    exc,
                )
                outcomes = [(request, self._run_alone(request)) for request in batch]
        finished = time.monotonic()
        if self._observer is not None:
            self._observer.on_batch(
                sum(r.rows for r in batch),
                len(batch),
                started - batch[0].enqueued,
                finished - started,
            )
        return outcomes

    def _run_alone(self, request: QueuedRequest) -> Tensors | BaseException:
        try:
            return self._predict_rows(request)
        except Exception as exc:  # handed to the request
            return exc

    def _predict_rows(self, request: QueuedRequest) -> Tensors:
        """One request alone: one call, or one per `max_rows_per_call` rows when it is larger
        (rows are independent in a mergeable model, so the answer is the same)."""
        step = self._max_rows_per_call
        if request.rows <= step or not self._mergeable:
            return self.servable.predict(request.inputs)
        parts = [
            self.servable.predict(
                {name: array[start : start + step] for name, array in request.inputs.items()}
            )
            for start in range(0, request.rows, step)
        ]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def resolve_soon(outcomes: list[Outcome]) -> None:
    """Hand the outcomes to the event loop(s) that wait for them: one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, items)


def _resolve(items: list[Outcome]) -> None:
    """Event loop: hand each request its result, unless it already timed out or was cancelled."""
    for request, outcome in items:
        if request.future.done():
            continue
        if isinstance(outcome, BaseException):
            request.future.set_exception(outcome)
        else:
            request.future.set_result(outcome)

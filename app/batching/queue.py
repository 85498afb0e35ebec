"""The batcher's queue: one record per submitted request, and which queued requests form a batch.

Everything here is called with the batcher's lock held (`app.batching.batcher`); nothing here
takes a lock, waits or calls TensorFlow.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Any

from app.batching.options import Tensors

# Request states; changed only under the batcher's lock.
QUEUED, RUNNING, DROPPED = 0, 1, 2


class QueuedRequest:
    """One submitted request while it is queued or running."""

    __slots__ = ("inputs", "rows", "nbytes", "key", "extent", "future", "loop", "enqueued", "state")

    def __init__(
        self,
        inputs: Tensors,
        rows: int,
        key: Any,
        extent: tuple[int, ...],
        future: asyncio.Future[Tensors],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        # Object (BYTES) arrays count their pointers only; the body limit bounds the rest.
        self.nbytes = sum(array.nbytes for array in inputs.values())
        self.key = key  # requests merge only when keys are equal
        self.extent = extent  # sizes of the variable (padded) axes, empty without padding
        self.future = future
        self.loop = loop
        self.enqueued = time.monotonic()
        self.state = QUEUED


def pop_live(queue: deque[QueuedRequest]) -> QueuedRequest | None:
    """The oldest request still queued (dropped ones are discarded on the way), or None."""
    while queue:
        request = queue.popleft()
        if request.state == QUEUED:
            return request
    return None


def take_compatible(
    queue: deque[QueuedRequest],
    batch: list[QueuedRequest],
    rows: int,
    limit: int,
    look_ahead: bool,
    group_widths: bool,
    max_pad_ratio: float,
) -> int:
    """Move queued requests that can join `batch` into it, oldest first; return its rows.

    Fixed-shape models (`look_ahead` false) take from the front of the queue. Variable-shape
    models scan ahead: requests of other shapes (without padding) or of too different widths
    (with `group_widths`: widest over narrowest within `max_pad_ratio`) stay queued for a later
    batch; the scan is bounded so a long queue costs little.
    """
    head = batch[0]
    if not look_ahead:  # fixed shapes: plain FIFO
        while queue and rows < limit:
            request = queue[0]
            if request.state != QUEUED:
                queue.popleft()
                continue
            if request.key != head.key or rows + request.rows > limit:
                break
            queue.popleft()
            batch.append(request)
            rows += request.rows
        return rows
    group = group_widths and bool(head.extent)
    widest = list(head.extent)
    narrowest = math.prod(head.extent)
    kept: list[QueuedRequest] = []
    scanned = 0
    while queue and rows < limit and scanned < 4 * limit:
        request = queue.popleft()
        scanned += 1
        if request.state != QUEUED:
            continue
        fits = request.key == head.key and rows + request.rows <= limit
        if fits and group:
            new_widest = [max(a, b) for a, b in zip(widest, request.extent, strict=True)]
            new_narrowest = min(narrowest, math.prod(request.extent))
            fits = math.prod(new_widest) <= max_pad_ratio * new_narrowest
        if fits:
            batch.append(request)
            rows += request.rows
            if group:
                widest, narrowest = new_widest, new_narrowest
        else:
            kept.append(request)
    queue.extendleft(reversed(kept))
    return rows

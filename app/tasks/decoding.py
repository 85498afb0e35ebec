"""A bounded pool for picture decoding: a few threads and a short waiting line, then 429.

Why: decoding and converting a large photo takes tens of milliseconds and up to the picture
limits' worth of memory. In Starlette's default thread pool up to 40 such decodes ran at once
(40 x the per-picture bound of memory, and the cores shared 40 ways); here at most `threads`
decode at once, at most `queue` more wait, and anything over that is refused at once with
`QueueFull` instead of piling up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from app.errors import QueueFull
from app.tasks.images import ImageLimits, decode_grayscale

T = TypeVar("T")


class DecodePool:
    """Run picture decodes on `threads` threads with at most `queue` more waiting."""

    def __init__(self, limits: ImageLimits, threads: int = 2, queue: int = 8) -> None:
        self.limits = limits
        self.capacity = threads + queue
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")
        # Counted until the thread is done with it (not until the caller stops waiting), so a
        # cancelled caller's running decode still holds its place.
        self._pending = 0

    @property
    def pending(self) -> int:
        return self._pending

    async def decode(self, data: bytes, convert: Callable[[np.ndarray], T]) -> T:
        """`convert(decode_grayscale(data))` in the pool; `QueueFull` when it is full."""
        limits = self.limits
        return await self.run(lambda: convert(decode_grayscale(data, limits=limits)))

    async def run(self, work: Callable[[], T]) -> T:
        if self._pending >= self.capacity:
            raise QueueFull(
                f"{self._pending} pictures are being decoded or waiting; the limit "
                f"is {self.capacity}: retry later"
            )
        loop = asyncio.get_running_loop()
        self._pending += 1
        future: Future[T] = self._executor.submit(work)
        future.add_done_callback(lambda _: self._release_soon(loop))
        return await asyncio.wrap_future(future)

    def _release_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody counts any more
            loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self._pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

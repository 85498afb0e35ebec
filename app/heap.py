"""Keep the garbage collector's full collections short: freeze the heap once models are loaded.

Why: with TensorFlow and the repository's models loaded the process tracks about 400,000
objects, and a full (generation 2) collection walks them all: about 200 ms here, during which
every request in flight waits (the 240 ms p99 spikes seen at concurrency 32). What exists once
the initial load is done lives as long as the process; `gc.freeze()` moves it out of the
collector's view, so later full collections walk only what was allocated since (under 1 ms).
Versions loaded later stay visible to the collector, which is only slower, never wrong.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import time
from typing import Any

log = logging.getLogger(__name__)
POLL_S = 0.05


async def freeze_heap_after_initial_load(registry: Any) -> None:
    """Wait for `registry.initial_load_done`, collect once, then freeze what is left."""
    while not registry.initial_load_done:
        await asyncio.sleep(POLL_S)
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "froze %d objects out of the garbage collector's view in %.0f ms",
        gc.get_freeze_count(),
        (time.perf_counter() - started) * 1000,
    )


def release_freed_memory() -> None:
    """Collect an unloaded version's cycles now and hand the freed heap pages back to the OS.

    Why: glibc keeps freed heap memory in its arenas. In the soak (a new version every 30 s, the
    oldest unloaded) the resident size grew by about 5 MB per version without this; loading and
    unloading a version 14 times in one process grew it by 13 MB without `malloc_trim` and by
    7 MB with it. Called after an unload, off the event loop; a no-op where glibc is absent.
    """
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)

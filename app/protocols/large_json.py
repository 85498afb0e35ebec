"""Big JSON bodies parsed off the event loop, in pieces short enough to keep it answering.

Why pieces: a parse in a worker thread still holds the GIL for as long as one C call runs, and
the event loop waits for it. A 24 MB TF Serving body held the loop for 3.7 s (a `/v2/health/live`
probe stalled 0.7 s here under load); one `orjson.loads` of it took 0.1-2 s and one `np.array`
over its numbers 0.2 s. So every numeric array of the body (TF Serving `instances`, the values
of dict rows, v2 `data`) is cut out and parsed in slices of `SLICE_BYTES` (one orjson call and
one numpy call each, a few milliseconds), and only what is left (names, shapes, strings) goes
through a single `orjson.loads`. Between slices the thread runs Python code, where the
interpreter hands the GIL to the event loop every few milliseconds.

The numbers come back as int64/float64 arrays, exactly what `orjson.loads` + `np.asarray`
would have given. Anything unusual (an array that is not rectangular, a body that already holds
the placeholder text, placeholders that do not land on whole values) falls back to one plain
`orjson.loads`: correct, only not sliced.

Small bodies never come here: `parse_off_loop` parses them inline (a thread hop costs about
50-100 us, a one-row request about 1 ms in all).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import orjson

from app.errors import InvalidInput, PayloadTooLarge
from app.protocols.numeric_json import (
    JSON_WHITESPACE,
    NUMBER_CHARACTERS,
    _shape_from_skeleton,
    skeleton_of,
)

#: Bodies up to this size are parsed on the event loop (settings: `inline_parse_bytes`).
INLINE_PARSE_BYTES = 1 << 20
#: Bytes of JSON text per C call when slicing (about 2-5 ms of orjson or numpy each).
SLICE_BYTES = 256 * 1024
#: Numeric arrays shorter than this stay in the remainder (orjson parses them there).
MIN_CUT_BYTES = 4096
PLACEHOLDER_PREFIX = "kerasserve:large-array:"

# An array that is an object's value or a list's element (where a numeric array can start).
_ARRAY_START = re.compile(rb"[:\[,]\s*\[")
_OPEN, _CLOSE = ord("["), ord("]")
_DIGIT = re.compile(rb"[0-9]")
#: Values (commas and brackets) one plain `orjson.loads` may see in a body parsed off the loop.
MAX_PLAIN_VALUES = 1 << 20
_NUMERIC_RUN = re.compile(rb"[\[\]0-9.eE+\-\s,]*")

# Two threads: parsing is CPU work on a 2-core machine, and the bodies waiting for them are
# already in memory (bounded by the body limit and the connection limit).
_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="parse")

T = TypeVar("T")


async def parse_off_loop(size: int, threshold: int, parse: Callable[..., T], *args: Any) -> T:
    """`parse(*args)` inline for a body of at most `threshold` bytes, else in a parse thread."""
    if size <= threshold:
        return parse(*args)
    return await asyncio.get_running_loop().run_in_executor(_executor, parse, *args)


def loads_large(
    body: bytes | memoryview, slice_bytes: int = SLICE_BYTES, min_cut_bytes: int = MIN_CUT_BYTES
) -> Any:
    """`orjson.loads(body)`, but with every large numeric array parsed in slices as numpy.

    A large numeric array that is not rectangular is refused here (no protocol takes one);
    what is left for one `orjson.loads` call may hold at most `MAX_PLAIN_VALUES` values.
    """
    data = bytes(body)
    if PLACEHOLDER_PREFIX.encode() in data:
        return _plain(data)
    pieces: list[bytes] = []
    arrays: list[np.ndarray] = []
    position = search_from = 0
    rescanned = 0  # bytes of long runs scanned without finding a whole array in them
    while rescanned <= 2 * len(data):
        match = _ARRAY_START.search(data, search_from)
        if match is None:
            break
        start = match.end() - 1  # the '['
        end, run_end = _array_end(data, start, slice_bytes)
        if run_end - start < min_cut_bytes:  # every array in this run is small: orjson's
            search_from = run_end
            continue
        if end < 0 or end - start < min_cut_bytes:  # look for whole arrays inside the run
            rescanned += run_end - start
            search_from = start + 1
            continue
        if _DIGIT.search(data, start, end) is None:  # only brackets (`[[], []]`): orjson's
            search_from = end
            continue
        array = _sliced_array(data, start, end, slice_bytes)
        if array is None:
            raise InvalidInput(
                f"the JSON array at byte {start} is not a rectangular array of "
                "numbers (rows of different lengths or depths)"
            )
        pieces.append(data[position:start])
        pieces.append(orjson.dumps(f"{PLACEHOLDER_PREFIX}{len(arrays)}"))
        arrays.append(array)
        position = search_from = end
    if not arrays:
        return _plain(data)
    pieces.append(data[position:])
    try:
        rest = _plain(b"".join(pieces))
    except InvalidInput:
        return _plain(data)
    placed, rest = _put_back(rest, arrays)
    return rest if placed == len(arrays) else _plain(data)


def _plain(data: bytes) -> Any:
    """One `orjson.loads`, bounded: it holds the GIL (and the event loop) for its whole run, and
    a body of 10 million tiny values kept it for over a second."""
    values = data.count(b",") + data.count(b"[") + data.count(b"{")
    if values > MAX_PLAIN_VALUES:
        raise PayloadTooLarge(
            f"the JSON body has about {values} values outside rectangular "
            f"numeric arrays; the limit is {MAX_PLAIN_VALUES}"
        )
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON body: {exc}") from exc


def _array_end(data: bytes, start: int, slice_bytes: int) -> tuple[int, int]:
    """(end of the array opening at `start` if only numeric-array characters come before its
    closing bracket, else -1; end of the run of such characters), a slice at a time."""
    depth = 0
    position = start
    while True:
        stop = min(position + slice_bytes, len(data))
        match = _NUMERIC_RUN.match(data, position, stop)
        run_end = match.end() if match else position
        window = np.frombuffer(data, np.uint8, run_end - position, position)
        brackets = np.flatnonzero((window == _OPEN) | (window == _CLOSE))  # a few per row
        depths = depth + np.cumsum(np.where(window[brackets] == _OPEN, 1, -1))
        closed = np.flatnonzero(depths == 0)
        if closed.size:
            return position + int(brackets[closed[0]]) + 1, run_end
        if run_end < stop or stop == len(data):
            return -1, run_end
        depth = int(depths[-1]) if depths.size else depth
        position = stop
        time.sleep(0)  # hand the GIL over now rather than at the next switch interval


def _sliced_array(data: bytes, start: int, end: int, slice_bytes: int) -> np.ndarray | None:
    """The rectangular numeric array in `data[start:end]`, None when it is not rectangular;
    parsed a slice per C call."""
    skeleton = b"".join(
        data[i : min(i + slice_bytes, end)].translate(None, NUMBER_CHARACTERS + JSON_WHITESPACE)
        for i in range(start, end, slice_bytes)
    )
    shape = _shape_from_skeleton(skeleton)
    if shape is None or skeleton_of(shape) != skeleton:
        return None
    parts: list[np.ndarray] = []
    position = start
    while position < end:
        stop = min(position + slice_bytes, end)
        if stop < end:
            comma = data.rfind(b",", position, stop)
            stop = comma if comma > position else data.find(b",", stop, end)
            stop = end if stop < 0 else stop
        numbers = data[position:stop].translate(None, b"[]").strip(JSON_WHITESPACE + b",")
        position = stop + 1
        if not numbers:
            continue
        try:
            part = np.array(orjson.loads(b"[" + numbers + b"]"))
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(
                f"malformed number in the JSON array at byte {start}: {exc}"
            ) from None
        if part.dtype.kind not in "if":  # integers past int64 (uint64, objects)
            raise InvalidInput(
                f"the JSON array at byte {start} has integers outside the 64-bit range"
            )
        parts.append(part)
        time.sleep(0)
    array = np.concatenate(parts) if parts else np.zeros(0)
    if array.size != int(np.prod(shape, dtype=np.int64)):
        return None
    return array.reshape(shape)


def _put_back(rest: Any, arrays: list[np.ndarray]) -> tuple[int, Any]:
    """Replace each placeholder string by its array (no recursion: nesting may be deep)."""
    placed = 0

    def swap(value: Any) -> Any:
        nonlocal placed
        if isinstance(value, str) and value.startswith(PLACEHOLDER_PREFIX):
            index = value[len(PLACEHOLDER_PREFIX) :]
            if index.isdigit() and int(index) < len(arrays):
                placed += 1
                return arrays[int(index)]
        return value

    rest = swap(rest)
    stack: list[Any] = [rest]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                node[key] = new = swap(value)
                if isinstance(new, dict | list):
                    stack.append(new)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                node[index] = new = swap(value)
                if isinstance(new, dict | list):
                    stack.append(new)
    return placed, rest

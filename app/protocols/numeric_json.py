"""Nested JSON arrays of numbers straight to numpy, without a Python object per element.

Why: TF Serving's row format sends an image as nested lists (`[[[[0.0],[0.0],...]]]`). orjson
then builds a Python list for every innermost row and a float for every pixel, and numpy walks
them all again to find the shape: a one-row MNIST request spent about 0.5 ms there, and the
service paid 6.4 ms CPU per TF Serving request against 3.2 ms for the same tensor in v2's flat
JSON. Here the array's text is cut out of the raw body, its brackets are dropped so that orjson
parses one flat list (what v2 JSON costs), and the shape is read from the bracket skeleton,
which must equal the skeleton of a rectangular array of that shape byte for byte.

Anything else (strings, `{"b64": ...}` objects, rows that are objects, ragged or empty lists)
gives `None`, and the caller takes the general path, which also produces the error messages.
"""

from __future__ import annotations

import math
import re
from functools import cache, lru_cache
from typing import Any

import numpy as np
import orjson

NUMBER_CHARACTERS = b"0123456789.eE+-"
JSON_WHITESPACE = b" \t\n\r"
MAX_DIMS = 32
# Skeletons of recent shapes are kept when small (a few per model); big ones are rebuilt.
CACHED_SKELETON_BYTES = 1 << 16
CACHED_SKELETONS = 64
# Stands in for the cut-out array while the rest of the body is parsed (bodies that already
# contain it take the general path).
PLACEHOLDER_TEXT = "kerasserve:numeric-array"
PLACEHOLDER = orjson.dumps(PLACEHOLDER_TEXT)


@cache
def _value_pattern(key: str) -> re.Pattern[bytes]:
    """`"key": [numbers, brackets, commas, whitespace]` (the array in group 1)."""
    return re.compile(rb'"' + re.escape(key.encode()) + rb'"\s*:\s*(\[[\[\]0-9.eE+\-\s,]*\])')


def parse_with_numeric_array(body: bytes, key: str) -> dict[str, Any] | None:
    """The JSON object in `body` with `body[key]` already a numpy array, or None.

    None when the object has no top-level `key` whose value is a rectangular array of numbers;
    the caller then parses the body the general way.
    """
    match = _value_pattern(key).search(body)
    if match is None or PLACEHOLDER in body:
        return None
    array = numeric_array(match.group(1))
    if array is None:
        return None
    try:
        rest = orjson.loads(body[: match.start(1)] + PLACEHOLDER + body[match.end(1) :])
    except orjson.JSONDecodeError:
        return None
    # The match may have been a nested object's key: then the top level's value is not ours.
    if not isinstance(rest, dict) or rest.get(key) != PLACEHOLDER_TEXT:
        return None
    rest[key] = array
    return rest


def numeric_array(text: bytes) -> np.ndarray | None:
    """A JSON array of numbers (any nesting, rectangular) as int64/float64, else None."""
    skeleton = text.translate(None, NUMBER_CHARACTERS + JSON_WHITESPACE)
    shape = _shape_from_skeleton(skeleton)
    if shape is None or skeleton_of(shape) != skeleton:
        return None
    try:
        flat = orjson.loads(b"[" + text.translate(None, b"[]") + b"]")
    except orjson.JSONDecodeError:
        return None
    array = np.array(flat)
    if array.dtype.kind not in "iuf" or array.size != math.prod(shape):
        return None
    return array.reshape(shape)


def _shape_from_skeleton(skeleton: bytes) -> tuple[int, ...] | None:
    """The shape a rectangular array with this skeleton (brackets and commas) would have.

    Between two neighbouring elements of a level-`m` list (of `ndim` levels) stand `ndim-1-m`
    closing brackets and a comma; a level-`m` list occurs `d0*...*d(m-1)` times, so counting the
    separators of each kind gives every dimension. The result is only a candidate: the caller
    compares the skeleton with the one this shape really has.
    """
    ndim = len(skeleton) - len(skeleton.lstrip(b"["))
    if not 0 < ndim <= MAX_DIMS:
        return None
    # at_least[j - 1]: separators with j or more closing brackets before the comma.
    at_least = [skeleton.count(b"]" * closers + b",") for closers in range(1, ndim + 1)]
    shape: list[int] = []
    lists_at_level = 1
    for level in range(ndim):
        closers = ndim - 1 - level
        if closers == 0:
            separators = skeleton.count(b",") - at_least[0]
        else:
            separators = at_least[closers - 1] - at_least[closers]
        if separators % lists_at_level:
            return None
        size = separators // lists_at_level + 1
        shape.append(size)
        lists_at_level *= size
    return tuple(shape)


def skeleton_of(shape: tuple[int, ...]) -> bytes:
    """Brackets and commas of a rectangular array of `shape`: `(2, 3)` -> `[[,,],[,,]]`."""
    return (
        _cached_skeleton(shape)
        if math.prod(shape) <= CACHED_SKELETON_BYTES // 2
        else _build_skeleton(shape)
    )


@lru_cache(maxsize=CACHED_SKELETONS)
def _cached_skeleton(shape: tuple[int, ...]) -> bytes:
    return _build_skeleton(shape)


def _build_skeleton(shape: tuple[int, ...]) -> bytes:
    inner = b"[" + b"," * (shape[-1] - 1) + b"]"
    for size in reversed(shape[:-1]):
        inner = b"[" + b",".join([inner] * size) + b"]"
    return inner

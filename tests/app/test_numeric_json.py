"""The TF Serving fast path for numeric arrays gives exactly what the general JSON path gives.

`app.protocols.numeric_json` decodes `instances` without a Python object per element; whatever
it accepts must equal `np.asarray(orjson.loads(...))` (shape, dtype and values), and whatever is
not a rectangular array of numbers must be left to the general path (None).
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from app.protocols.numeric_json import PLACEHOLDER_TEXT, numeric_array, parse_with_numeric_array


def _general_path(text: str) -> np.ndarray:
    return np.asarray(orjson.loads(text))


@pytest.mark.parametrize("shape", [(1,), (3,), (2, 3), (1, 28, 28, 1), (4, 1, 2), (2, 2, 2, 2, 2)])
@pytest.mark.parametrize("kind", ["float", "int"])
def test_rectangular_numbers_equal_the_general_path(shape: tuple[int, ...], kind: str) -> None:
    rng = np.random.default_rng(sum(shape))
    values = rng.random(shape) - 0.5 if kind == "float" else rng.integers(-9, 9, shape)
    for text in (
        orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
        json.dumps(values.tolist(), indent=1),
    ):  # with whitespace and newlines
        fast = numeric_array(text.encode())
        expected = _general_path(text)
        assert fast is not None
        assert fast.shape == expected.shape and fast.dtype == expected.dtype
        assert np.array_equal(fast, expected)


@pytest.mark.parametrize(
    "text",
    [
        "[[1,2],[3]]",
        "[[1,2],[3],[4,5,6]]",
        "[[[1],[2]],[[3],[4,5]]]",
        "[[1],2]",
        "[1,[2]]",
        "[]",
        "[[]]",
        "[[],[]]",
        "[1,,2]",
        "[1.2.3]",
        "[--1]",
        "[[1,2],[3,4]",
        "[1e999]",
    ],
)
def test_anything_else_is_left_to_the_general_path(text: str) -> None:
    assert numeric_array(text.encode()) is None


def test_the_body_keeps_its_other_keys_and_gets_an_array() -> None:
    body = parse_with_numeric_array(
        b'{"signature_name": "serving_default", "instances": [[1.5, 2], [3, 4]]}', "instances"
    )
    assert body is not None and body["signature_name"] == "serving_default"
    assert body["instances"].dtype == np.float64
    assert body["instances"].tolist() == [[1.5, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"x": {"instances": [1]}, "instances": [[2]]}',  # a nested key matched first
        b'{"x": {"instances": [1]}, "instances": null}',
        b'{"instances": [{"image": [1]}]}',  # rows that are objects
        b'{"instances": [[1, 2]]',  # malformed JSON
        b'[{"instances": [1]}]',  # not an object
        b'{"instances": [1], "note": "' + PLACEHOLDER_TEXT.encode() + b'"}',
    ],
)
def test_bodies_it_cannot_be_sure_of_take_the_general_path(raw: bytes) -> None:
    assert parse_with_numeric_array(raw, "instances") is None

"""TF Serving JSON <-> arrays, for the cases the three models do not cover over HTTP:
one-output rows, string and `_bytes` outputs, b64 inputs, named-instance mistakes."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from app.errors import InvalidInput
from app.protocols.common import ORJSON_OPTIONS
from app.protocols.tfserving import (
    columns_to_inputs,
    encode_output,
    predictions_from_outputs,
    rows_to_inputs,
)


def _json(outputs: dict[str, np.ndarray]) -> object:
    encoded = {key: encode_output(key, value) for key, value in outputs.items()}
    return orjson.loads(
        orjson.dumps(predictions_from_outputs(encoded, outputs), option=ORJSON_OPTIONS)
    )


def test_one_output_predictions_are_the_bare_values() -> None:
    scores = np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32)
    assert _json({"scores": scores}) == [[0.25, 0.75], [1.0, 0.0]]


def test_several_outputs_give_one_object_per_row() -> None:
    outputs = {
        "class_id": np.array([3, 7], dtype=np.int64),
        "text": np.array([b"42", b"7"], dtype=object),
    }
    assert _json(outputs) == [{"class_id": 3, "text": "42"}, {"class_id": 7, "text": "7"}]


def test_bytes_outputs_are_b64_objects() -> None:
    raw = np.array([b"\x00\xff", b"ok"], dtype=object)
    assert _json({"image_bytes": raw}) == [
        {"b64": base64.b64encode(b"\x00\xff").decode()},
        {"b64": base64.b64encode(b"ok").decode()},
    ]


def test_outputs_of_different_batch_sizes_ask_for_the_columnar_format() -> None:
    with pytest.raises(InvalidInput, match="columnar format"):
        _json({"a": np.zeros(2), "b": np.zeros(3)})


def test_b64_inputs_become_bytes_objects() -> None:
    inputs = rows_to_inputs([{"b64": base64.b64encode(b"\x00png").decode()}], ["image"])
    assert inputs["image"].dtype == object and inputs["image"].tolist() == [b"\x00png"]
    with pytest.raises(InvalidInput, match="invalid base64"):
        columns_to_inputs({"image": [{"b64": "***"}]}, ["image"])


def test_named_instances_must_agree_and_multi_input_rows_must_be_named() -> None:
    with pytest.raises(InvalidInput, match="instance 1 has"):
        rows_to_inputs([{"a": 1, "b": 2}, {"a": 1}], ["a", "b"])
    with pytest.raises(InvalidInput, match=r"inputs \['a', 'b'\]"):
        rows_to_inputs([[1, 2]], ["a", "b"])
    named = rows_to_inputs([{"a": 1, "b": [2, 3]}, {"a": 4, "b": [5, 6]}], ["a", "b"])
    assert named["a"].tolist() == [1, 4] and named["b"].shape == (2, 2)

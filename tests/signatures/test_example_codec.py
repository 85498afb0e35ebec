"""TF Serving's JSON examples -> `tf.Example`, the context merge, method detection and
base64, without a server."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2

from app.errors import InvalidInput, PayloadTooLarge
from app.examples import classifications, regressions, serialize
from app.limits import ExampleLimits
from app.protocols.base64_json import decode_b64
from app.protocols.tf_example_json import examples_from_body
from app.servable import TensorSpec
from app.signatures import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD, detect_method

LIMITS = ExampleLimits()


def _spec(name: str, dtype: str, shape: tuple[int | None, ...] = (None,)) -> TensorSpec:
    numpy_dtype = np.dtype(object) if dtype == "string" else np.dtype(dtype)
    return TensorSpec(name, numpy_dtype, dtype, shape)


def test_feature_values_are_typed_as_tf_serving_types_them() -> None:
    examples, context = examples_from_body(
        {
            "context": {"country": "fr", "flags": [True, False]},
            "examples": [
                {
                    "count": 9223372036854775807,
                    "ratio": [0.25, 1e-3],
                    "image": {"b64": base64.urlsafe_b64encode(b"\xfb\xff").decode()},
                    "empty": [],
                }
            ],
        },
        LIMITS,
    )
    assert context is not None
    features = examples[0].features.feature
    assert list(features["count"].int64_list.value) == [2**63 - 1]
    assert list(features["ratio"].float_list.value) == pytest.approx([0.25, 1e-3])
    assert list(features["image"].bytes_list.value) == [b"\xfb\xff"]
    assert features["empty"].WhichOneof("kind") is None
    assert list(context.features.feature["country"].bytes_list.value) == [b"fr"]
    assert list(context.features.feature["flags"].int64_list.value) == [1, 0]


def test_the_context_is_merged_into_every_example() -> None:
    examples, context = examples_from_body(
        {"context": {"offset": 5}, "examples": [{"x": 1.0}, {"x": 2.0}]}, LIMITS
    )
    serialized = serialize(examples, context, LIMITS)
    parsed = tf.io.parse_example(
        tf.constant(list(serialized)),
        {
            "x": tf.io.FixedLenFeature([1], tf.float32),
            "offset": tf.io.FixedLenFeature([1], tf.int64),
        },
    )
    assert parsed["x"].numpy().ravel().tolist() == [1.0, 2.0]
    assert parsed["offset"].numpy().ravel().tolist() == [5, 5]
    merged = example_pb2.Example.FromString(serialized[1])
    assert set(merged.features.feature) == {"x", "offset"}


def test_bounds_count_the_context_copies() -> None:
    small = ExampleLimits(max_examples=3, max_features=2, max_values=10, max_serialized_bytes=10**6)
    with pytest.raises(PayloadTooLarge, match="4 examples; the limit is 3"):
        examples_from_body({"examples": [{}] * 4}, small)
    with pytest.raises(PayloadTooLarge, match="example 0 has 3 features"):
        examples_from_body({"examples": [{"a": 1, "b": 2, "c": 3}]}, small)
    examples, context = examples_from_body(
        {"context": {"c": [1, 2, 3, 4]}, "examples": [{"x": 1}] * 3}, small
    )
    with pytest.raises(PayloadTooLarge, match="15 feature values"):
        serialize(examples, context, small)


@pytest.mark.parametrize(
    "inputs, outputs, declared, method",
    [
        ({"inputs": "string"}, {"scores": "float32"}, PREDICT_METHOD, CLASSIFY_METHOD),
        (
            {"inputs": "string"},
            {"classes": "string", "scores": "float32"},
            PREDICT_METHOD,
            CLASSIFY_METHOD,
        ),
        ({"inputs": "string"}, {"outputs": "float32"}, PREDICT_METHOD, REGRESS_METHOD),
        ({"inputs": "string"}, {"outputs": "string"}, PREDICT_METHOD, PREDICT_METHOD),
        ({"inputs": "float32"}, {"outputs": "float32"}, PREDICT_METHOD, PREDICT_METHOD),
        (
            {"inputs": "string", "x": "string"},
            {"scores": "float32"},
            PREDICT_METHOD,
            PREDICT_METHOD,
        ),
        ({"text": "string"}, {"scores": "float32"}, PREDICT_METHOD, PREDICT_METHOD),
        ({"x": "float32"}, {"y": "float32"}, REGRESS_METHOD, REGRESS_METHOD),
    ],
)
def test_method_detection(inputs: dict, outputs: dict, declared: str, method: str) -> None:
    found = detect_method(
        declared,
        {k: _spec(k, v) for k, v in inputs.items()},
        {k: _spec(k, v) for k, v in outputs.items()},
    )
    assert found == method


def test_results_are_checked_like_tf_serving_checks_them() -> None:
    found = classifications(
        "c",
        {"classes": np.array([[b"a", b"b"]], dtype=object), "scores": np.array([[0.25, 0.75]])},
        1,
    )
    assert found.pairs(0) == [("a", np.float32(0.25)), ("b", np.float32(0.75))]
    with pytest.raises(InvalidInput, match=r"has shape \[2\] for 2 examples"):
        classifications("c", {"scores": np.zeros(2, np.float32)}, 2)
    assert regressions("r", {"outputs": np.array([[1.5], [2.5]], np.float32)}, 2).tolist() == [
        1.5,
        2.5,
    ]
    with pytest.raises(InvalidInput, match="one value per example"):
        regressions("r", {"outputs": np.zeros((2, 2), np.float32)}, 2)


def test_base64_both_alphabets() -> None:
    data = bytes(range(256))
    for text in (base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()):
        assert decode_b64(text, "x") == data
        assert decode_b64(text.rstrip("="), "x") == data
    with pytest.raises(InvalidInput, match="invalid base64"):
        decode_b64("a*b=", "input 'x'")

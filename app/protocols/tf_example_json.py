"""TF Serving's REST classify/regress bodies -> `tf.train.Example` messages.

`{"signature_name": ..., "context": {feature: value-or-list}, "examples": [{feature: ...}]}`,
with TF Serving's typing of feature values: a JSON integer (or `true`/`false`) goes to
`int64_list`, a number with a fraction or exponent to `float_list` (refused when float32
cannot hold it), a string or `{"b64": ...}` to `bytes_list`; one feature's values must all be
of one kind, and nested lists, `null` and other objects are refused. Counts are bounded
(`app.limits.ExampleLimits`) before anything is built.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from app.errors import InvalidInput
from app.limits import ExampleLimits
from app.protocols.base64_json import decode_b64

FLOAT32_MAX = float(np.finfo(np.float32).max)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_KINDS = {"int64_list": "int64", "float_list": "float", "bytes_list": "bytes"}


def _kind_and_value(value: Any, feature: str) -> tuple[str, Any]:
    if isinstance(value, bool):
        return "int64_list", int(value)
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidInput(f"feature {feature!r}: {value} does not fit int64")
        return "int64_list", value
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) > FLOAT32_MAX:
            raise InvalidInput(
                f"feature {feature!r}: {value!r} cannot be a float32 without loss of precision"
            )
        return "float_list", value
    if isinstance(value, str):
        return "bytes_list", value.encode("utf-8")
    if isinstance(value, dict) and list(value) == ["b64"] and isinstance(value["b64"], str):
        return "bytes_list", decode_b64(value["b64"], f"feature {feature!r}")
    kind = "null" if value is None else type(value).__name__
    raise InvalidInput(
        f"feature {feature!r} has a value of JSON type {kind}; expected a number, a string, "
        '{"b64": ...} or a list of one kind of them'
    )


def example_from_json(features: Any, where: str, example_class: Any) -> Any:
    """One `tf.train.Example` from `{feature: value-or-list}`."""
    if not isinstance(features, dict):
        raise InvalidInput(f"{where} must be a JSON object of features, got {_type(features)}")
    example = example_class()
    feature_map = example.features.feature
    for name, content in features.items():
        values = content if isinstance(content, list) else [content]
        target = feature_map[name]  # an empty list makes an empty feature, as in TF Serving
        kind: str | None = None
        converted = []
        for value in values:
            value_kind, item = _kind_and_value(value, name)
            if kind is not None and value_kind != kind:
                raise InvalidInput(
                    f"feature {name[:80]!r} of {where} mixes {_KINDS[kind]} and "
                    f"{_KINDS[value_kind]} values"
                )
            kind = value_kind
            converted.append(item)
        if kind is not None:
            getattr(target, kind).value.extend(converted)
    return example


def examples_from_body(body: Any, limits: ExampleLimits) -> tuple[list[Any], Any | None]:
    """(the examples, the context or None) of a classify/regress body."""
    from tensorflow.core.example import example_pb2

    if not isinstance(body, dict):
        raise InvalidInput(f"the request body must be a JSON object, got {_type(body)}")
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise InvalidInput(
            "a classify or regress request needs 'examples', a non-empty list of "
            "{feature: value} objects"
        )
    limits.check_count(len(examples))
    for index, features in enumerate(examples):  # before any example is built
        if isinstance(features, dict):
            limits.check_features(index, len(features))
    context = None
    if "context" in body:
        context = example_from_json(body["context"], "'context'", example_pb2.Example)
    built = [
        example_from_json(features, f"example {index}", example_pb2.Example)
        for index, features in enumerate(examples)
    ]
    return built, context


def _type(value: Any) -> str:
    names: dict[type, str] = {
        dict: "object",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)

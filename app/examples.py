"""TF Serving's Classify and Regress without a transport: `tf.Example`s in, results out.

Protocols build `tf.train.Example` messages (TF Serving's REST JSON, or the gRPC request's
own), `serialize` turns them into the string tensor a classify or regress signature takes
(its input `inputs`), bounded by `app.limits.ExampleLimits`, and the data plane runs the
signature. `classifications` and `regressions` check the signature's outputs as TF Serving
does (`classes` string and `scores` float, both `[batch, classes]`; `outputs` float `[batch]`
or `[batch, 1]`) and give them back per example.

A context (TF Serving's `ExampleListWithContext`) is merged into every example the way TF
Serving merges it: its serialized bytes are put in front of each example's, which protobuf
parses as one message with both maps of features. A feature name in both is refused (TF
Serving's documentation: context features must not appear in the examples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import InvalidInput
from app.limits import DEFAULT_EXAMPLE_LIMITS, ExampleLimits
from app.signatures import CLASSES_OUTPUT, REGRESS_OUTPUT, SCORES_OUTPUT


def _value_count(example: Any) -> int:
    return sum(
        len(feature.bytes_list.value)
        + len(feature.float_list.value)
        + len(feature.int64_list.value)
        for feature in example.features.feature.values()
    )


def serialize(
    examples: Sequence[Any],
    context: Any | None = None,
    limits: ExampleLimits = DEFAULT_EXAMPLE_LIMITS,
) -> np.ndarray:
    """The examples (each merged with `context`) as a 1-D object array of serialized bytes."""
    if not examples:
        raise InvalidInput("the request needs at least one example")
    limits.check_count(len(examples))
    context_bytes, context_values, context_names = b"", 0, frozenset[str]()
    if context is not None:
        context_names = frozenset(context.features.feature)
        limits.check_features(-1, len(context_names))
        context_values = _value_count(context)
        context_bytes = context.SerializeToString()
    serialized = np.empty(len(examples), dtype=object)
    values = size = 0
    for index, example in enumerate(examples):
        names = example.features.feature
        limits.check_features(index, len(names) + len(context_names))
        clash = context_names.intersection(names)
        if clash:
            raise InvalidInput(
                f"feature {sorted(clash)[0][:80]!r} is in the context and in example {index}: "
                "context features must not appear in the examples"
            )
        data = example.SerializeToString()
        values += _value_count(example) + context_values
        size += len(data) + len(context_bytes)
        limits.check_totals(values, size)
        serialized[index] = context_bytes + data
    return serialized


@dataclass(frozen=True)
class Classifications:
    """Per example, its classes' labels and scores (`None`: the signature has no such output;
    TF Serving then answers an empty label, or a score of 0)."""

    labels: list[list[str]] | None
    scores: np.ndarray | None  # float32 [batch, classes], numpy so JSON keeps float32's digits

    @property
    def rows(self) -> int:
        """The number of examples."""
        found = self.labels if self.labels is not None else self.scores
        return 0 if found is None else len(found)

    def pairs(self, row: int) -> list[tuple[str, Any]]:
        """(label, score) per class of one example."""
        labels = self.labels[row] if self.labels is not None else None
        scores = self.scores[row] if self.scores is not None else None
        width = len(labels) if labels is not None else 0 if scores is None else len(scores)
        return [
            (
                labels[k] if labels is not None else "",
                scores[k] if scores is not None else np.float32(0.0),
            )
            for k in range(width)
        ]


def _batch_check(
    signature: str, name: str, array: np.ndarray, count: int, ranks: tuple[int, ...]
) -> None:
    if array.ndim not in ranks or array.shape[0] != count:
        shapes = " or ".join({1: "[batch]", 2: "[batch, classes]"}[rank] for rank in ranks)
        raise InvalidInput(
            f"signature {signature!r} output {name!r} has shape {list(array.shape)} for "
            f"{count} examples; a {shapes} tensor is expected"
        )


def classifications(
    signature: str, outputs: Mapping[str, np.ndarray], count: int
) -> Classifications:
    """`classes` and `scores` of a classify signature for `count` examples, checked."""
    classes, scores = outputs.get(CLASSES_OUTPUT), outputs.get(SCORES_OUTPUT)
    if classes is None and scores is None:
        raise InvalidInput(f"signature {signature!r} has neither a 'classes' nor a 'scores' output")
    labels = None
    if classes is not None:
        if classes.dtype.kind not in "OSU":
            raise InvalidInput(f"signature {signature!r} output 'classes' must be strings")
        _batch_check(signature, CLASSES_OUTPUT, classes, count, (2,))
        labels = [
            [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row]
            for row in classes.tolist()
        ]
    if scores is not None:
        if scores.dtype.kind != "f":
            raise InvalidInput(f"signature {signature!r} output 'scores' must be floats")
        _batch_check(signature, SCORES_OUTPUT, scores, count, (2,))
        scores = scores.astype(np.float32, copy=False)
        if classes is not None and classes.shape != scores.shape:
            raise InvalidInput(
                f"signature {signature!r} outputs 'classes' {list(classes.shape)} and "
                f"'scores' {list(scores.shape)} differ in shape"
            )
    return Classifications(labels, scores)


def regressions(signature: str, outputs: Mapping[str, np.ndarray], count: int) -> np.ndarray:
    """The `outputs` of a regress signature for `count` examples: float32 `[count]`."""
    values = outputs.get(REGRESS_OUTPUT)
    if values is None or values.dtype.kind != "f":
        raise InvalidInput(f"signature {signature!r} needs a float output 'outputs'")
    _batch_check(signature, REGRESS_OUTPUT, values, count, (1, 2))
    if values.ndim == 2 and values.shape[1] != 1:
        raise InvalidInput(
            f"signature {signature!r} output 'outputs' has shape {list(values.shape)}; "
            "one value per example ([batch] or [batch, 1]) is expected"
        )
    return values.reshape(count).astype(np.float32, copy=False)

"""Padding, merge and split of a batch: pure functions of the requests and the model's specs.

`padding_plan` decides from a servable's signature and metadata whether requests may merge and
how (see its docstring); `describe` gives a request's rows, merge key and variable extent;
`merge` builds one input per name for a batch (padded to the widest request on the variable
axes) and `split` cuts the merged outputs back into each request's part. Nothing here holds
state or takes a lock: the batcher (`app.batching.batcher`) calls them from its threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.batching.options import ServableLike, Tensors
from app.errors import InvalidInput
from app.repository.format import PAD_VALUE_KEY, TIME_STRIDE_KEY


@dataclass(frozen=True)
class PaddingPlan:
    """How to merge inputs of different widths and cut outputs back, derived from the specs.

    `variable_axes[name]` lists the padded axes of an input; `output_cuts[name]` lists, for an
    output, (axis, stride): the request's part is cut to `ceil(width / stride)` on that axis,
    where width is the one variable input extent.
    """

    variable_axes: dict[str, tuple[int, ...]]
    output_cuts: dict[str, tuple[tuple[int, int], ...]]
    pad_value: float


def variable_axes(shape: tuple[int | None, ...]) -> tuple[int, ...]:
    return tuple(axis for axis, size in enumerate(shape) if axis > 0 and size is None)


def padding_plan(servable: ServableLike, allow_padding: bool) -> tuple[PaddingPlan | None, bool]:
    """Return (plan, mergeable) for the servable's signature and metadata.

    Padding is only done for a model that declares a `pad_value` in its metadata (padding is
    then its documented contract, as for `ocr`) and only when the options allow it: a model
    with a bidirectional RNN over the width (our `ocr`) decodes the same text when padded, but
    its probabilities and confidence move slightly (up to 0.026 and 0.019 measured on version 1
    with 8 to 200 columns of padding), so an operator who needs bit-exact answers switches
    padding off and keeps merging requests of equal widths. A variable output also needs
    `time_stride` and a single variable input axis, so each request's part can be cut back.
    Without a plan, requests merge only when their shapes are identical. Not mergeable: an
    output varies in a way that does not follow from the input shape, so every request runs
    alone.
    """
    variable_inputs = {n: ax for n, s in servable.inputs.items() if (ax := variable_axes(s.shape))}
    variable_outputs = {
        n: ax for n, s in servable.outputs.items() if (ax := variable_axes(s.shape))
    }
    stride = servable.metadata.get(TIME_STRIDE_KEY)
    input_axis_count = sum(len(ax) for ax in variable_inputs.values())
    derivable = bool(stride) and input_axis_count == 1
    if variable_outputs and not derivable:
        return None, False
    pad_value = servable.metadata.get(PAD_VALUE_KEY)
    if not variable_inputs or pad_value is None or not allow_padding:
        return None, True
    cuts = {
        name: tuple((axis, int(stride)) for axis in axes)  # type: ignore[arg-type]
        for name, axes in variable_outputs.items()
    }
    return PaddingPlan(variable_inputs, cuts, float(pad_value)), True


def describe(inputs: Tensors, plan: PaddingPlan | None) -> tuple[int, Any, tuple[int, ...]]:
    """Rows of a request, its merge key and its variable extent (cheap: shapes only).

    Requests merge only when their keys are equal; the extent is the sizes of the padded axes.
    """
    rows = -1
    key: list[Any] = []
    extent: list[int] = []
    variable_axes = plan.variable_axes if plan else {}
    for name, array in inputs.items():
        shape = array.shape
        if not shape:
            raise InvalidInput(f"input '{name}' needs a batch dimension")
        if rows < 0:
            rows = shape[0]
        elif shape[0] != rows:
            raise InvalidInput(f"input '{name}' has {shape[0]} rows; other inputs have {rows}")
        axes = variable_axes.get(name)
        if axes:
            extent.extend(shape[axis] for axis in axes)
            shape = tuple(-1 if axis in axes else size for axis, size in enumerate(shape))
        key.append((name, shape[1:], array.dtype))
    if rows < 1:
        raise InvalidInput("a request needs at least one row")
    return rows, tuple(key), tuple(extent)


def merge(requests: list[Tensors], plan: PaddingPlan | None) -> Tensors:
    """One input per name for the whole batch: concatenated along the rows, padded with the
    plan's `pad_value` up to the widest request on the variable axes."""
    merged: Tensors = {}
    for name in requests[0]:
        parts = [inputs[name] for inputs in requests]
        axes = plan.variable_axes.get(name) if plan else None
        if not axes or all(p.shape == parts[0].shape for p in parts):
            merged[name] = np.concatenate(parts, axis=0)
            continue
        shape = list(parts[0].shape)
        shape[0] = sum(p.shape[0] for p in parts)
        for axis in axes:
            shape[axis] = max(p.shape[axis] for p in parts)
        out = np.full(shape, plan.pad_value, dtype=parts[0].dtype)  # type: ignore[union-attr]
        start = 0
        for part in parts:
            index = (slice(start, start + part.shape[0]),) + tuple(
                slice(0, size) for size in part.shape[1:]
            )
            out[index] = part
            start += part.shape[0]
        merged[name] = out
    return merged


def split(
    requests: list[tuple[int, tuple[int, ...]]], outputs: Tensors, plan: PaddingPlan | None
) -> list[Tensors]:
    """Per-request views of the merged outputs (`requests`: rows and extent of each, in batch
    order), cut back where the width was padded."""
    cuts = plan.output_cuts if plan else {}
    results: list[Tensors] = [{} for _ in requests]
    for name, value in outputs.items():
        output_cuts = cuts.get(name)
        start = 0
        for result, (rows, extent) in zip(results, requests, strict=True):
            end = start + rows
            if output_cuts:
                index: tuple[slice, ...] = (slice(start, end),)
                for axis, stride in output_cuts:
                    index += (slice(None),) * (axis - len(index))
                    index += (slice(0, -(-extent[0] // stride)),)
                result[name] = value[index]
            else:
                result[name] = value[start:end]
            start = end
    return results

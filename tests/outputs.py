"""One rule for comparing a served answer with what the model itself computes.

Every protocol's tests compare outputs the same way: the same output names, the same shapes,
strings and integers exactly (bytes and text alike: JSON carries strings, TensorFlow bytes),
floats to `FLOAT_TOLERANCE` (a float32 result that went through a codec and back).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

#: How far a served float may be from the model's own (absolute; float32 rounding is ~1e-7).
FLOAT_TOLERANCE = 1e-5


def as_text(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


def assert_same_outputs(
    got: Mapping[str, Any],
    want: Mapping[str, Any],
    keys: Iterable[str] | None = None,
    rtol: float = 0.0,
    atol: float = FLOAT_TOLERANCE,
) -> None:
    """`got` (arrays, or JSON lists) equals `want` output by output; with `keys`, only those
    outputs' values are compared (the names must still be the same)."""
    assert set(got) == set(want), (sorted(got), sorted(want))
    for key in keys if keys is not None else want:
        expected, value = np.asarray(want[key]), np.asarray(got[key])
        assert value.shape == expected.shape, (key, value.shape, expected.shape)
        if expected.dtype.kind in "OSU":
            texts = [as_text(v) for v in value.ravel().tolist()]
            assert texts == [as_text(v) for v in expected.ravel().tolist()], key
        elif expected.dtype.kind in "iub":
            np.testing.assert_array_equal(value, expected, err_msg=key)
        else:
            np.testing.assert_allclose(
                value.astype(expected.dtype), expected, rtol=rtol, atol=atol, err_msg=key
            )

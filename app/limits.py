"""Data limits every transport shares: tensors (rank, elements) and uploaded pictures.

A request can only make the server allocate what these checks allow, and they run on what the
request *declares* (a shape in a JSON header) and what it *carries* (the bytes present) before
anything is allocated: a 100-byte v2 request declaring a BYTES tensor of 50 million elements
made `np.empty(count, object)` allocate 381 MB before its first element was read, and a shape
of 2**40 x 2**40 raised numpy's own error (a 500). Codecs call `check_declared` with the
declared shape and the bytes behind it; the data plane calls `check_arrays` on whatever arrays
a transport built, so a transport without a codec here (gRPC) gets the same bounds.

Over a size bound: 413 (`PayloadTooLarge`); a shape that contradicts its own data: 400.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from app.errors import InvalidInput, PayloadTooLarge

#: Smallest encoding of one BYTES element in the binary extension: its 4-byte length prefix.
BYTES_ELEMENT_MIN_SIZE = 4


@dataclass(frozen=True, slots=True)
class TensorLimits:
    """Bounds on the tensors of one request (settings: `max_tensor_rank` and friends).

    The defaults let every model here take a full body's worth of rows (the 32 MiB body limit
    holds at most 8 Mi float32 values in binary, fewer in JSON) and stop shapes no model has.
    """

    max_rank: int = 8
    max_tensor_elements: int = 1 << 24  # 16 Mi elements: 64 MiB as float32
    max_request_elements: int = 1 << 25  # all inputs of one request together

    def __post_init__(self) -> None:
        for field in ("max_rank", "max_tensor_elements", "max_request_elements"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be at least 1")

    def check_rank(self, name: str, rank: int) -> None:
        if rank > self.max_rank:
            raise InvalidInput(f"input {name!r} has rank {rank}; the limit is {self.max_rank}")

    def declared_shape(self, name: str, dims: Sequence[int]) -> tuple[int, ...]:
        """A shape as a message declares it (protobuf repeated sizes): the rank is checked
        before the dimensions are read, then each must be non-negative."""
        self.check_rank(name, len(dims))
        shape = tuple(dims)
        if any(size < 0 for size in shape):
            raise InvalidInput(
                f"input {name!r}: the shape must be non-negative integers, got {list(shape)}"
            )
        return shape

    def check_shape(self, name: str, shape: tuple[int, ...]) -> int:
        """The element count of a declared shape, after checking rank and size (no allocation).

        Every dimension is bounded on its own too: with a zero elsewhere the product is 0, and
        numpy still refuses a dimension of 2**80 with its own error.
        """
        self.check_rank(name, len(shape))
        if shape and max(shape) > self.max_tensor_elements:
            raise PayloadTooLarge(
                f"input {name!r}: dimension {max(shape)} of shape "
                f"{_short(shape)} is over the limit of "
                f"{self.max_tensor_elements} elements per tensor"
            )
        count = math.prod(shape)
        if count > self.max_tensor_elements:
            raise PayloadTooLarge(
                f"input {name!r}: shape {_short(shape)} has {count} elements; "
                f"the limit is {self.max_tensor_elements} per tensor"
            )
        return count

    def check_declared(
        self, name: str, shape: tuple[int, ...], datatype: str, itemsize: int | None, size: int
    ) -> int:
        """Check a declared shape against the `size` bytes that carry it; return its count.

        `itemsize` None means BYTES: each element takes at least its 4-byte length prefix, so
        a declared count can never exceed `size / 4`.
        """
        count = self.check_shape(name, shape)
        if itemsize is None:
            if count * BYTES_ELEMENT_MIN_SIZE > size:
                most = size // BYTES_ELEMENT_MIN_SIZE
                raise InvalidInput(
                    f"input {name!r}: BYTES data ends after {most} of {count} "
                    f"elements at most ({size} bytes hold at most {most} "
                    "4-byte length prefixes)"
                )
        elif count * itemsize != size:
            raise InvalidInput(
                f"input {name!r}: shape {_short(shape)} of {datatype} needs "
                f"{count * itemsize} bytes but binary_data_size is {size}"
            )
        return count

    def check_request(self, counts: Iterable[int]) -> None:
        """The elements of all inputs of one request together."""
        total = sum(counts)
        if total > self.max_request_elements:
            raise PayloadTooLarge(
                f"the request has {total} tensor elements in all; the limit "
                f"is {self.max_request_elements}"
            )

    def check_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Rank and sizes of arrays a transport already built (shapes only: no element loop)."""
        for name, array in arrays.items():
            self.check_shape(name, array.shape)
        self.check_request(array.size for array in arrays.values())


DEFAULT_LIMITS = TensorLimits()


@dataclass(frozen=True, slots=True)
class ExampleLimits:
    """What one classify or regress request may carry (`tf.Example`s, TF Serving's format).

    A context's features are copied into every example (as TF Serving does), so a 1 MB context
    and 10,000 one-line examples would make 10 GB of serialized examples from a 1 MB body: the
    bounds count what is serialized, context copies included, before it is built.
    """

    max_examples: int = 1 << 16
    max_features: int = 1 << 10  # per example, context included
    max_values: int = 1 << 24  # feature values of every example together, context copies too
    max_serialized_bytes: int = 1 << 26  # 64 MiB of serialized examples in all

    def check_count(self, count: int) -> None:
        if count > self.max_examples:
            raise PayloadTooLarge(
                f"the request has {count} examples; the limit is {self.max_examples}"
            )

    def check_features(self, index: int, count: int) -> None:
        if count > self.max_features:
            raise PayloadTooLarge(
                f"example {index} has {count} features (context included); "
                f"the limit is {self.max_features}"
            )

    def check_totals(self, values: int, serialized_bytes: int) -> None:
        if values > self.max_values:
            raise PayloadTooLarge(
                f"the examples hold {values} feature values in all (context copied into "
                f"each example); the limit is {self.max_values}"
            )
        if serialized_bytes > self.max_serialized_bytes:
            raise PayloadTooLarge(
                f"the examples serialize to {serialized_bytes} bytes (context copied into "
                f"each example); the limit is {self.max_serialized_bytes}"
            )


DEFAULT_EXAMPLE_LIMITS = ExampleLimits()


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What one uploaded picture may be (settings `max_image_*`), checked from its header by
    `app.tasks.images.decode_grayscale`; each over-limit is a 413.

    `max_decode_bytes` bounds the decoded pixels in Pillow's storage mode (RGB and RGBA take
    four bytes a pixel, 16-bit greyscale two, grey one), conversions at full size included.
    """

    max_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 40_000_000  # a 40 MP photo fits
    max_side: int = 10_000
    max_aspect: float = 250.0  # a 2000 x 10 line of digits is 200
    max_decode_bytes: int = 128 * 1024 * 1024


def check_variable_dims(
    name: str, spec_shape: tuple[int | None, ...], shape: tuple[int, ...], max_variable_dim: int
) -> None:
    """The variable non-batch axes of an input (the OCR width) against the model's bound.

    A 28 x 100,000 strip was accepted on /v1 and /v2 and cost 12 s and +403 MB in the model;
    the task endpoint already stops strips at 2048 columns, which is the default here.
    """
    for axis, (want, got) in enumerate(zip(spec_shape, shape, strict=False)):
        if axis and want is None and got > max_variable_dim:
            raise PayloadTooLarge(
                f"input {name!r}: dimension {axis} is {got}; this model "
                f"takes at most {max_variable_dim} there"
            )


def _short(shape: tuple[int, ...]) -> str:
    """A shape for a message, cut short: a 100,000-dimension shape must not echo back whole."""
    text = str(list(shape))
    return text if len(text) <= 80 else text[:77] + "..."

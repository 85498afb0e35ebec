"""Batching options and what the batcher needs from a servable and from metrics.

`BatchingOptions` is validated here, once (`__post_init__`); the settings (pydantic) and the
repository config (`app.repository.config`) both build it, so a bad value gets the same message
wherever it comes from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchingOptions:
    """Per-model batching options (repository config overrides, defaults from settings).

    The defaults are tuned for a 2-core CPU machine: one TensorFlow call already keeps both
    cores busy through TensorFlow's intra-op pool; a second inference thread lets the next batch
    be formed (and its Python-side merge and split done) while the previous one computes, and
    TensorFlow's shared intra-op pool keeps two concurrent calls from oversubscribing the cores.
    Width grouping with `max_pad_ratio` 1.5 used 2-3% less CPU per strip than padding all to the
    widest on the `ocr` network (random widths 28..448, concurrency 32, two runs; requests/s
    were within the noise of a shared machine), and it pads narrow strips less, which keeps
    their answers closer to the unpadded ones; merging equal widths only cost 3.3x the CPU.
    """

    enabled: bool = True
    max_batch_size: int = 128  # rows per servable call
    max_rows_per_call: int = 256  # a larger lone request runs in slices of this many rows
    max_batch_delay_us: int = 500  # longest wait for more rows, only while another batch runs
    max_queued_rows: int = 4096  # rows waiting (not yet running); beyond it: 429
    max_queued_bytes: int = 256 * 1024 * 1024  # input bytes waiting; beyond it: 429
    timeout_s: float = 30.0  # per request, queue wait plus compute; beyond it: 504
    inference_threads: int = 2  # threads that call TensorFlow for this model
    pad_variable_inputs: bool = True  # False: merge identical shapes only (bit-exact answers)
    group_widths: bool = True  # keep very different widths out of one padded batch
    max_pad_ratio: float = 1.5  # widest / narrowest request allowed in one batch
    # Largest variable non-batch dimension of an input (the OCR width) on every protocol; the
    # task endpoint's strips stop at the same 2048 columns. Checked by the data plane.
    max_variable_dim: int = 2048

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.max_rows_per_call < 1:
            raise ValueError("max_rows_per_call must be at least 1")
        if self.max_batch_delay_us < 0:
            raise ValueError("max_batch_delay_us must not be negative")
        if self.max_queued_rows < 1:
            raise ValueError("max_queued_rows must be at least 1")
        if self.max_queued_bytes < 1:
            raise ValueError("max_queued_bytes must be at least 1")
        if self.max_variable_dim < 1:
            raise ValueError("max_variable_dim must be at least 1")
        if not math.isfinite(self.timeout_s):  # nan compares false with everything
            raise ValueError("timeout_s must be finite")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.inference_threads < 1:
            raise ValueError("inference_threads must be at least 1")
        if not 1.0 <= self.max_pad_ratio < math.inf:
            raise ValueError("max_pad_ratio must be at least 1.0")


class BatchObserver(Protocol):
    """Hooks for metrics. Called from inference threads and the event loop: keep them
    cheap and thread-safe (Prometheus collectors are)."""

    def on_batch(self, rows: int, requests: int, queue_wait_s: float, compute_s: float) -> None:
        """A servable call finished: its size, the oldest member's wait, and its duration."""

    def on_rejected(self, reason: str) -> None:
        """A request failed without running: "queue_full", "deadline", "closing" or
        "client_gone" (its client disconnected while it was queued)."""


class SpecLike(Protocol):
    """What the batcher reads of an input or output spec."""

    @property
    def dtype(self) -> Any: ...
    @property
    def shape(self) -> tuple[int | None, ...]: ...


class ServableLike(Protocol):
    """What the batcher needs from `app.servable.Servable` (read-only, hence properties)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def inputs(self) -> Mapping[str, SpecLike]: ...
    @property
    def outputs(self) -> Mapping[str, SpecLike]: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...

    def predict(self, inputs: Tensors) -> Tensors: ...

"""Dynamic batching, by concern.

- `options`: `BatchingOptions` (validated once) and the interfaces the batcher works with;
- `padding`: padding, merge and split of a batch, as pure functions;
- `batcher`: `DynamicBatcher`: the queue, its threads, deadlines and the metrics hooks.

The runners built on it (one per loaded version) are in `app.runners`. Importing this package
does not import TensorFlow: the settings use `BatchingOptions` before anything loads.
"""

from app.batching.batcher import DynamicBatcher
from app.batching.options import BatchingOptions, BatchObserver, ServableLike, SpecLike, Tensors

__all__ = [
    "BatchObserver",
    "BatchingOptions",
    "DynamicBatcher",
    "ServableLike",
    "SpecLike",
    "Tensors",
]

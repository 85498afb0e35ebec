"""Dynamic batching, by concern.

- `options`: `BatchingOptions` (validated once) and the interfaces the batcher works with;
- `padding`: padding, merge and split of a batch, as pure functions;
- `queue`: the record of a queued request and which queued requests form a batch;
- `execution`: running a formed batch (merged, sliced, or one by one after a failed merge) and
  handing each outcome back to its event loop;
- `batcher`: `DynamicBatcher`: admission, deadlines, the drain and the inference threads;
- `runners`: what the registry builds per loaded version: the batcher, or `UnbatchedRunner`
  (one call per request in a small bounded pool), behind one `Runner` interface.

Importing this package does not import `runners` (and with it `app.servable`): the settings use
`BatchingOptions` before anything loads.
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

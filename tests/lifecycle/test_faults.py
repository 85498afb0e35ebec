"""Fault injection: a repository, a config file and a shutdown that go wrong while serving.

Each live test runs a real `python -m app` on 127.0.0.1 against a repository that holds the
faults (or gets them while serving, under a bounded load) and checks that the healthy model
keeps answering, that each fault is reported in status, logs and metrics, and that no response
body carries the repository's absolute path. The in-process tests cover the checks themselves.

Faults root cannot read past are used throughout (a link loop, a dangling link, a FIFO, a file
where a folder belongs), because these tests may run as root. The one permission fault, a
`lost+found` with mode 000, bites only a non-root process: as root, the server runs in a new
user namespace (`unshare -U`), where root's files are not its own any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from app.batching import BatchingOptions
from app.metrics import ServiceMetrics
from app.redaction import public_text, repository_name
from app.registry import ModelRegistry
from app.repository import RepositoryError, check_version_files, scan_repository_report
from app.repository.config import RepositoryConfigError, parse_repository_config
from app.repository.reloader import RepositoryReloader
from app.warmup import (
    WarmupFileError,
    WarmupLimits,
    read_warmup_requests,
    warmup_file,
    write_warmup_file,
)
from tests.lifecycle.conftest import (
    ADMIN_HEADERS,
    MODEL,
    SERVER_ARGS,
    mnist_image,
    publish_copy,
    tf_predict_body,
    version_states,
    wait_for,
    write_config,
)
from tests.lifecycle.load import BoundedLoad
from tests.lifecycle.metrics_util import scrape
from tests.live_server import LiveServer, free_port, service_command, stop, wait_until_loaded

FAST_POLL = ["--poll-interval", "0.2"]
WARMUP_LIMIT_BYTES = 200_000  # the oversized warm-up file below is about 250 kB
SETTLE_S = 90.0


# ---- helpers -------------------------------------------------------------------------------


def _userns_prefix() -> list[str]:
    """`unshare -U` when running as root and user namespaces work here, else nothing."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    probe = subprocess.run(["unshare", "-U", "true"], capture_output=True)
    return ["unshare", "-U"] if probe.returncode == 0 else []


@contextmanager
def fault_server(
    repository: Path, logs: Path, models: list[str], *extra: str, prefix: list[str] | None = None
) -> Iterator[LiveServer]:
    """A server (optionally under `prefix`) waited for until `models` have settled."""
    port = free_port()
    log_path = logs / f"server-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *(prefix or []),
                *service_command(repository, port, [*SERVER_ARGS, *FAST_POLL, *extra]),
            ],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(process, port, log_path)
    try:
        wait_until_loaded(server, models, SETTLE_S)
        yield server
    finally:
        stop(server.process)


class RecordingClient(httpx.Client):
    """An httpx client that keeps every response body it received (for the path check)."""

    def __init__(self, url: str) -> None:
        self.bodies: list[str] = []
        super().__init__(
            base_url=url,
            timeout=30.0,
            headers=ADMIN_HEADERS,
            event_hooks={"response": [self._keep]},
        )

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append(
            f"{response.request.method} {response.request.url.path}: {response.text}"
        )


def assert_no_paths(bodies: list[str], repository: Path) -> None:
    spellings = {str(repository), str(repository.resolve()), str(repository.parent)}
    leaks = [body for body in bodies if any(s in body for s in spellings)]
    assert bodies and not leaks, leaks[:3]


def _index(client: httpx.Client) -> list[dict[str, str]]:
    response = client.post("/v2/repository/index")
    assert response.status_code == 200, response.text
    return response.json()


def _index_reason(index: list[dict[str, str]], name: str, version: str | None) -> str:
    for entry in index:
        if entry["name"] == name and entry.get("version") == version:
            return entry["reason"]
    raise AssertionError(f"{name} {version} is not in the index: {index}")


def _predict_ok(client: httpx.Client) -> dict:
    answer = client.post(f"/v1/models/{MODEL}:predict", json=tf_predict_body())
    assert answer.status_code == 200, answer.text
    return answer.json()


def _without_saved_model(staged: Path) -> None:
    (staged / "saved_model.pb").unlink()


def _truncated_saved_model(staged: Path) -> None:
    path = staged / "saved_model.pb"
    path.write_bytes(path.read_bytes()[:1000])


def _corrupt_warmup(staged: Path) -> None:
    write_warmup_file(staged, [{"image": mnist_image(1)}])
    path = warmup_file(staged)
    path.write_bytes(path.read_bytes()[:-40])  # a record cut short: a killed copy


def _oversized_warmup(staged: Path) -> None:
    write_warmup_file(staged, [{"image": mnist_image(80)}])


def _record_header(length: int) -> bytes:
    """A TFRecord header: the length and its masked CRC32C, as TensorFlow's reader checks it."""
    header = length.to_bytes(8, "little")
    crc = 0xFFFFFFFF
    for byte in header:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    crc ^= 0xFFFFFFFF
    masked = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    return header + masked.to_bytes(4, "little")


def _raising_warmup(staged: Path) -> None:
    write_warmup_file(staged, [{"image": np.zeros((1, 5, 5, 1), np.float32)}])  # wrong shape


# ---- a repository full of unusable entries; versions that fail while one serves ------------


def test_unusable_entries_and_failed_versions_leave_the_healthy_model_serving(
    repository: Path, mnist_version_source: Path, tmp_path: Path
) -> None:
    root = repository
    mnist = root / MODEL
    lost = root / "lost+found"
    lost.mkdir()
    os.symlink("loop", root / "loop")
    os.symlink(str(tmp_path / "nowhere"), root / "ghost")
    os.mkfifo(root / "fifo")
    os.symlink("7", mnist / "7")  # a version that is a link loop
    os.mkfifo(mnist / "8")  # a version that is a FIFO
    (mnist / "9").write_text("a file where a version folder belongs")
    (root / "bad" / "1" / "saved_model.pb").mkdir(parents=True)
    (root / "hang" / "1").mkdir(parents=True)
    os.mkfifo(root / "hang" / "1" / "saved_model.pb")  # TensorFlow would block on it for ever
    shutil.copytree(mnist_version_source, mnist / ".tmp-5-killed")  # a publish killed halfway
    _truncated_saved_model(mnist / ".tmp-5-killed")
    os.chmod(lost, 0)
    prefix = _userns_prefix()
    permission_bites = (
        subprocess.run([*prefix, "ls", str(lost)], capture_output=True).returncode != 0
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        with (
            fault_server(
                root,
                logs,
                [MODEL, "bad", "hang"],
                "--warmup-max-bytes",
                str(WARMUP_LIMIT_BYTES),
                prefix=prefix,
            ) as server,
            RecordingClient(server.url) as client,
        ):
            assert client.get("/v2/health/ready").status_code == 200
            states = version_states(client)
            assert list(states) == [1] and states[1]["state"] == "AVAILABLE"
            bad = client.get("/v1/models/bad").json()["model_version_status"][0]
            assert bad["state"] == "END"
            assert bad["status"]["error_message"] == (
                "cannot load SavedModel of bad version 1: RepositoryError: saved_model.pb is a "
                "folder, not a file"
            )
            hang = client.get("/v1/models/hang").json()["model_version_status"][0]
            assert "saved_model.pb is a FIFO, not a regular file" in hang["status"]["error_message"]

            index = _index(client)
            assert "link loop" in _index_reason(
                index, "loop", None
            ) or "symbolic links" in _index_reason(index, "loop", None)
            assert "dangling" in _index_reason(index, "ghost", None)
            assert "FIFO" in _index_reason(index, "fifo", None)
            assert "symbolic links" in _index_reason(index, MODEL, "7")
            assert "is a FIFO, not a version folder" in _index_reason(index, MODEL, "8")
            assert "is a file, not a version folder" in _index_reason(index, MODEL, "9")
            assert not [e for e in index if "tmp" in e["name"] or e.get("version") == "5"]
            if permission_bites:
                assert "permission denied" in _index_reason(index, "lost+found", None)
            problems = client.get("/v2/repository/config").json()["problems"]
            assert {p["entry"] for p in problems} >= {
                "loop",
                "ghost",
                "fifo",
                "mnist/7",
                "mnist/8",
                "mnist/9",
            }
            metrics = scrape(client)
            expected_unreadable = 3 + permission_bites  # loop, ghost, mnist/7 (+ lost+found)
            assert (
                metrics.value("kerasserve_repository_problems", kind="unreadable_entry")
                == expected_unreadable
            )
            assert metrics.value("kerasserve_repository_problems", kind="invalid_entry") == 3
            assert (
                metrics.value("kerasserve_repository_errors_total", kind="unreadable_entry")
                == expected_unreadable
            )

            # Versions that fail while version 1 serves: the healthy one never stops answering.
            load = BoundedLoad(server.url, clients=2, pause_s=0.05).start()
            try:
                publish_copy(root, mnist_version_source, 10, change=_without_saved_model)
                publish_copy(root, mnist_version_source, 11, change=_truncated_saved_model)
                publish_copy(root, mnist_version_source, 12, change=_corrupt_warmup)
                publish_copy(root, mnist_version_source, 13, change=_oversized_warmup)
                publish_copy(root, mnist_version_source, 14, change=_raising_warmup)
                failed = wait_for(
                    lambda: (
                        (s := version_states(client))
                        and all(s.get(v, {}).get("state") == "END" for v in range(10, 15))
                        and s
                    ),
                    SETTLE_S,
                    "versions 10 to 14 to fail",
                )
                # Version 1's files are truncated, then its folder removed, while it serves.
                for path in (mnist / "1").rglob("*"):
                    if path.is_file():
                        path.write_bytes(b"")
                _predict_ok(client)
                shutil.rmtree(mnist / "1")
                wait_for(
                    lambda: (
                        "still serving from memory" in _index_reason(_index(client), MODEL, "1")
                    ),
                    10.0,
                    "version 1 to be reported removed",
                )
                time.sleep(1.0)  # a few more polls: nothing unloads it
            finally:
                outcomes = load.stop()
            assert outcomes and all(o.status == 200 and o.version == 1 for o in outcomes), [
                o for o in outcomes if o.status != 200
            ][:3]
            messages = {v: failed[v]["status"]["error_message"] for v in range(10, 15)}
            assert "has no saved_model.pb" in messages[10]
            assert "cannot load SavedModel of mnist version 11" in messages[11]
            assert "not a TFRecord file of PredictionLog" in messages[12]
            assert f"over the limit of {WARMUP_LIMIT_BYTES}" in messages[13]
            assert "warm-up of mnist version 14 failed" in messages[14]
            assert version_states(client)[1]["state"] == "AVAILABLE"
            assert _predict_ok(client)["predictions"]
            metrics = scrape(client)
            assert metrics.value("kerasserve_model_load_failures_total", model=MODEL) == 5
            assert (
                metrics.value("kerasserve_repository_problems", kind="version_folder_removed") == 1
            )
            client.get(f"/v1/models/{MODEL}/versions/11")
            client.post(f"/v1/models/{MODEL}/versions/11:predict", json=tf_predict_body())
            client.post("/v2/repository/models/hang/load")
            client.get("/v2/repository/config")
            log = server.log()
        assert_no_paths(client.bodies, root)
        assert "repository problem (unreadable_entry) loop" in log
        assert "mnist version 1: its folder was removed; it keeps serving from memory" in log
    finally:
        os.chmod(lost, 0o700)


# ---- the config file: missing for a moment, half written, values out of range --------------


def test_config_missing_for_a_moment_or_half_written_keeps_the_previous_one(
    repository: Path, tmp_path: Path
) -> None:
    config = repository / "config.yaml"
    write_config(repository, f"models: {{{MODEL}: {{labels: {{stable: 1}}}}}}\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    with fault_server(repository, logs, [MODEL]) as server, RecordingClient(server.url) as client:

        def stable() -> int:
            return client.get(f"/v1/models/{MODEL}/labels/stable").status_code

        assert stable() == 200
        # Values that are not finite or out of range: refused, naming the key; no 500s.
        out_of_range = "config.yaml: models.mnist.batching.timeout_s: expected a finite number "
        for value, expected in (
            (".nan", f"{out_of_range}from 0.001 to 86400.0, got nan"),
            (".inf", f"{out_of_range}from 0.001 to 86400.0, got inf"),
            ("-1", "config.yaml: models.mnist.batching: timeout_s must be positive"),
            ("1" + "0" * 24, f"{out_of_range}from 0.001 to 86400.0, got an integer of 25 digits"),
        ):
            write_config(
                repository,
                f"models: {{{MODEL}: {{labels: {{stable: 1}}, "
                f"batching: {{timeout_s: {value}}}}}}}\n",
            )
            wait_for(
                lambda expected=expected: (
                    client.get("/v2/repository/config").json()["error"] == expected
                ),
                10.0,
                f"timeout_s {value} to be refused",
            )
            assert stable() == 200
            assert (
                client.post(f"/v1/models/{MODEL}:predict", json=tf_predict_body()).status_code
                == 200
            )
        write_config(repository, f"models: {{{MODEL}: {{labels: {{stable: 1}}}}}}\n")
        wait_for(
            lambda: client.get("/v2/repository/config").json()["error"] is None,
            10.0,
            "the good config to be read",
        )

        # An editor's save: the file is renamed away, then a new one appears.
        os.rename(config, repository / "config.yaml~")
        status = wait_for(
            lambda: (s := client.get("/v2/repository/config").json())["error"] and s,
            10.0,
            "the missing file to be reported",
        )
        assert "config.yaml is missing or empty" in status["error"]
        assert status["problems"][0]["kind"] == "config_missing"
        for _ in range(5):  # a second of polls: the label stays
            assert stable() == 200
            time.sleep(0.2)
        os.replace(repository / "config.yaml~", config)
        wait_for(
            lambda: client.get("/v2/repository/config").json()["error"] is None,
            10.0,
            "the file to be back",
        )
        # Truncated to 0 bytes (an editor that writes in place) counts as missing too.
        config.write_bytes(b"")
        time.sleep(1.0)
        assert stable() == 200
        config.write_text(f"models: {{{MODEL}: {{labels: {{stable: 1}}}}}}\n")

        # Half written: not valid YAML. Refused, reported, the previous config stays.
        config.write_text(f"models: {{{MODEL}: {{labels: {{stab")
        status = wait_for(
            lambda: (
                (s := client.get("/v2/repository/config").json())["error"]
                and "not valid YAML" in s["error"]
                and s
            ),
            10.0,
            "the half-written file to be refused",
        )
        assert status["error"].startswith("config.yaml: not valid YAML")
        assert stable() == 200
        metrics = scrape(client)
        assert metrics.value("kerasserve_repository_errors_total", kind="config_invalid") >= 5
        assert metrics.value("kerasserve_repository_errors_total", kind="config_missing") >= 2
        assert metrics.value("kerasserve_repository_problems", kind="config_invalid") == 1

        # Deleted on purpose: after the grace period (5 s) the defaults are in force.
        config.unlink()
        deleted = time.monotonic()
        wait_for(lambda: stable() == 404, 15.0, "the label to go once the file is gone")
        assert time.monotonic() - deleted >= 4.0
        assert client.get("/v2/repository/config").json()["error"] is None
        log = server.log()
    assert_no_paths(client.bodies, repository)
    assert "the previous config stays in force" in log
    assert "the defaults are in force now" in log


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (0.0001, "0.0001"),
        (86_401, "86401"),
        (10**30, "an integer of 31 digits"),
    ],
)
def test_config_numbers_must_be_finite_and_in_range(value: float, shown: str) -> None:
    with pytest.raises(RepositoryConfigError) as error:
        parse_repository_config({"models": {"m": {"batching": {"timeout_s": value}}}})
    assert str(error.value) == (
        f"models.m.batching.timeout_s: expected a finite number from 0.001 to 86400.0, got {shown}"
    )
    with pytest.raises(RepositoryConfigError, match="models.m.batching: timeout_s must be pos"):
        parse_repository_config({"models": {"m": {"batching": {"timeout_s": -1.0}}}})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("inference_threads", 1_000_000_000),
        ("max_batch_size", 2**40),
        ("max_batch_delay_us", 3_600_000_000),
        ("max_pad_ratio", float("nan")),
        ("max_queued_bytes", 2**60),
    ],
)
def test_other_batching_values_are_bounded(key: str, value: float) -> None:
    with pytest.raises(
        RepositoryConfigError, match=f"models.m.batching.{key}: expected a finite number from"
    ):
        parse_repository_config({"models": {"m": {"batching": {key: value}}}})


def test_huge_version_numbers_are_refused_with_a_short_message() -> None:
    with pytest.raises(RepositoryConfigError) as error:
        parse_repository_config(yaml.safe_load("models: {m: {labels: {a: " + "9" * 40 + "}}}"))
    assert "got an integer of 40 digits" in str(error.value)
    assert len(str(error.value)) < 120


# ---- SIGTERM while the initial load runs -----------------------------------------------------


def test_sigterm_during_the_initial_load_exits_within_the_grace_period(
    repository: Path, tmp_path: Path
) -> None:
    # A warm-up of 8 batches of 2048 pictures: about 50 MB and several seconds of compute.
    write_warmup_file(
        repository / MODEL / "1",
        [
            {"image": np.random.default_rng(seed).random((2048, 28, 28, 1), dtype=np.float32)}
            for seed in range(8)
        ],
    )
    grace_s = 2.0
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            service_command(repository, port, [*SERVER_ARGS, "--shutdown-grace", str(grace_s)]),
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:

            def loading() -> bool:
                try:
                    states = version_states(client)
                except (httpx.TransportError, AssertionError):
                    return False
                return states.get(1, {}).get("state") == "LOADING"

            wait_for(loading, 60.0, "the initial load to start", interval_s=0.05)
            assert client.get("/v2/health/ready").status_code == 503
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30.0)
        took = time.monotonic() - signalled
    finally:
        stop(process)
    log = log_path.read_text(errors="replace")
    assert status == 0, log[-3000:]
    assert took < grace_s + 1.5, f"exit took {took:.1f} s"
    assert "model load(s) still running (they are abandoned)" in log
    assert "loaded mnist version 1" not in log  # the load was cut short, not waited for


# ---- the checks themselves, in process -------------------------------------------------------


def test_scan_reports_unusable_entries_and_never_raises(tmp_path: Path) -> None:
    for folder in ("good/1", "good/.tmp-2-x", "empty", "deep/1"):
        (tmp_path / folder).mkdir(parents=True)
    os.symlink("loop", tmp_path / "loop")
    os.symlink("missing", tmp_path / "good" / "3")
    os.mkfifo(tmp_path / "good" / "4")
    (tmp_path / "config.yaml").write_text("models: {}\n")
    (tmp_path / os.fsdecode(b"bad\xffname")).mkdir()
    scan = scan_repository_report(tmp_path)
    assert sorted(scan.models) == ["deep", "good"]
    assert [v.version for v in scan.models["good"].versions] == [1]
    found = {(p.kind, p.entry) for p in scan.problems}
    assert found == {
        ("unreadable_entry", "loop"),
        ("unreadable_entry", "good/3"),
        ("invalid_entry", "good/4"),
        ("invalid_entry", "bad\\xffname"),
    }
    assert scan.unreadable == {"loop"}
    assert all(str(tmp_path) not in p.message for p in scan.problems)
    with pytest.raises(RepositoryError, match="not a directory") as error:
        scan_repository_report(tmp_path / "absent")
    assert str(tmp_path) not in str(error.value)


def test_version_files_are_checked_before_tensorflow_opens_them(tmp_path: Path) -> None:
    version = tmp_path / "1"
    (version / "variables").mkdir(parents=True)
    with pytest.raises(RepositoryError, match="no saved_model.pb"):
        check_version_files(version)
    (version / "saved_model.pb").write_bytes(b"x")
    check_version_files(version)
    os.mkfifo(version / "variables" / "variables.index")
    with pytest.raises(RepositoryError, match="variables/variables.index is a FIFO"):
        check_version_files(version)
    os.unlink(version / "variables" / "variables.index")
    for index in range(5):
        (version / f"asset-{index}").write_bytes(b"")
    with pytest.raises(RepositoryError, match="more than 4 files"):
        check_version_files(version, max_entries=4)


def test_warmup_reads_are_bounded_before_anything_is_allocated(tmp_path: Path) -> None:
    requests = [{"image": mnist_image(1, seed=seed)} for seed in range(3)]
    path = write_warmup_file(tmp_path, requests)
    size = path.stat().st_size
    assert len(read_warmup_requests(tmp_path, WarmupLimits(size, 3)) or []) == 3
    with pytest.raises(WarmupFileError, match=f"over the limit of {size - 1}"):
        read_warmup_requests(tmp_path, WarmupLimits(size - 1, 3))
    with pytest.raises(WarmupFileError, match="more than 2 records"):
        read_warmup_requests(tmp_path, WarmupLimits(size, 2))
    # A 76-byte file whose header (with a valid checksum) declares a 16 GiB record: refused from
    # the header. TensorFlow's reader would allocate the declared length first (it crashed a
    # process capped at 12 GB of address space with SIGSEGV).
    path.write_bytes(_record_header(1 << 34) + b"\0" * 64)
    with pytest.raises(WarmupFileError, match="declares 17179869184 bytes, the file has 64"):
        read_warmup_requests(tmp_path)
    os.unlink(path)
    os.mkfifo(path)
    with pytest.raises(WarmupFileError, match="not a regular file") as error:
        read_warmup_requests(tmp_path)
    assert str(error.value) == "assets.extra/tf_serving_warmup_requests is not a regular file"


def test_public_text_names_repository_entries_and_hides_other_paths(tmp_path: Path) -> None:
    root = tmp_path / "models"
    text = (
        f"cannot load SavedModel of m version 3: OSError: Cannot parse file "
        f"b'{root}/m/3/saved_model.pb'; see {root} and /etc/passwd on /job:localhost/cpu:0"
    )
    assert public_text(text, root) == (
        "cannot load SavedModel of m version 3: OSError: Cannot parse file "
        "b'm/3/saved_model.pb'; see <repository> and <path> on /job:localhost/cpu:0"
    )
    assert repository_name(root / "config.yaml", root) == "config.yaml"
    assert repository_name(Path("/etc/kerasserve/repository.yaml"), root) == "repository.yaml"


# ---- the loop itself: any exception in one model or one pass is reported and retried ---------


class FlakyReloader(RepositoryReloader):
    """A reloader whose scan fails once and whose pass over model `a` fails twice (a bug)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scans_failed = 0
        self.model_failures = 0

    def _scan(self) -> Any:
        if self.scans_failed < 1:
            self.scans_failed += 1
            raise ZeroDivisionError(f"a bug that names {self.registry.repository}")
        return super()._scan()

    async def _reconcile_model(self, name: str, model: Any) -> None:
        if name == "a" and self.model_failures < 2:
            self.model_failures += 1
            raise KeyError(name)
        await super()._reconcile_model(name, model)


def test_the_loop_survives_any_exception_and_reports_it(
    tmp_path: Path, mnist_version_source: Path
) -> None:
    root = tmp_path / "models"
    for name in ("a", "b"):
        shutil.copytree(mnist_version_source, root / name / "1")
    metrics = ServiceMetrics()
    registry = ModelRegistry(root, BatchingOptions())
    reloader = FlakyReloader(registry, root / "config.yaml", 0.05, 1.0, metrics)

    async def scenario() -> tuple[list[str], list[str], set[str]]:
        task = asyncio.create_task(reloader.run())
        seen_problems: set[str] = set()
        try:
            deadline = time.monotonic() + 60.0
            while time.monotonic() < deadline:
                seen_problems |= {f"{p.kind} {p.entry}: {p.message}" for p in reloader.problems()}
                states = reloader.snapshot_states()
                if states.get("a") == {1: "AVAILABLE"} and not reloader.problems():
                    break
                await asyncio.sleep(0.05)
            assert registry.initial_load_done
            assert not task.done()
            # Model b's folder turns into a link loop while it serves: it is left as it is.
            os.rename(root / "b", root / ".b-aside")
            os.symlink("b", root / "b")
            await asyncio.sleep(0.5)  # ten polls
            unreadable = [(p.kind, p.entry) for p in reloader.problems()]
            b_states = reloader.snapshot_states()["b"]
            index = [(e.name, e.version, e.state) for e in reloader.index()]
            os.unlink(root / "b")
            os.rename(root / ".b-aside", root / "b")
            for _ in range(100):  # the next poll clears the fault
                if not reloader.problems():
                    break
                await asyncio.sleep(0.05)
            assert unreadable == [("unreadable_entry", "b")]
            assert b_states == {1: "AVAILABLE"}
            assert ("b", 1, "READY") in index and ("b", None, "UNAVAILABLE") in index
            return registry.model_names(), [e.reason for e in reloader.index()], seen_problems
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await registry.close(1.0)

    names, _, seen = asyncio.run(scenario())
    assert names == ["a", "b"]
    assert reloader.scans_failed == 1 and reloader.model_failures == 2
    assert (
        "pass_failed <repository>: the repository pass failed (ZeroDivisionError: a bug that "
        "names <repository>); retried at the next poll" in seen
    )
    assert (
        "model_pass_failed a: loading and unloading failed (KeyError: 'a'); retried at the next "
        "poll" in seen
    )
    exposition = metrics.exposition().decode()
    assert 'kerasserve_repository_errors_total{kind="pass_failed"} 1.0' in exposition
    # The same failure twice in a row is one fault, counted once.
    assert 'kerasserve_repository_errors_total{kind="model_pass_failed"} 1.0' in exposition
    assert "kerasserve_repository_problems{" not in exposition  # all cleared

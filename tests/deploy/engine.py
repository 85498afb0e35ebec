"""A private Docker engine for the deployment tests (see ../../../shared/notes/containers.md).

Why: the `docker` on PATH is often a client with no daemon, and CI runs as root on a plain
machine. So the tests start their own `dockerd` with its own data root, exec root and socket,
talk to it through `DOCKER_HOST`, and stop it at the end. Nothing here touches a system engine.

The data root lives under the test cache (/var/cache/kerasserve-tests) so the stand-in base image
and the build cache survive between runs; it is guarded by a file lock, and when the lock is taken
(another run in progress) a throwaway data root is used instead. Nothing depends on the cache.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.deploy.processes import CommandFailed, Finished, run

CACHE_ROOT = Path(os.environ.get("KERASSERVE_TEST_CACHE", "/var/cache/kerasserve-tests"))
APT_PACKAGES = ("docker.io", "debootstrap")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
CACHE_KEEP_STORAGE = "12GB"


class EngineUnavailable(RuntimeError):
    """The engine cannot run on this machine (not root, no apt, no kernel support...)."""


def machine_can_host_engine() -> str | None:
    """None when this machine should be able to run an engine, else the reason it cannot."""
    if not Path("/proc/self/cgroup").exists():
        return "not a Linux machine with cgroups"
    if os.geteuid() != 0:
        return "starting a Docker engine needs root (CI runs as root)"
    if shutil.which("dockerd") is None and shutil.which("apt-get") is None:
        return "no dockerd and no apt-get to install docker.io"
    return None


def install_packages() -> None:
    """apt-get install docker.io and debootstrap when their commands are missing."""
    if shutil.which("dockerd") and shutil.which("debootstrap") and Path("/usr/bin/docker").exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES]
    try:
        if run(install, timeout=600, env=env, check=False).returncode != 0:
            run(["apt-get", "update", "-q"], timeout=300, env=env)
            run(install, timeout=600, env=env)
    except CommandFailed as exc:
        raise EngineUnavailable(
            f"could not install {' '.join(APT_PACKAGES)} with apt-get:\n{exc}"
        ) from exc


def docker_client() -> str:
    """Debian's client (20.10) matches the engine's API; any other `docker` is a fallback."""
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    found = shutil.which("docker")
    if found is None:
        raise EngineUnavailable("no docker client after installing docker.io")
    return found


@dataclass
class DockerEngine:
    """A running private `dockerd` and the environment that points clients at it."""

    process: subprocess.Popen[bytes]
    socket: Path
    exec_root: Path
    data_root: Path
    log_path: Path
    client: str
    lock_file: IO[str] | None
    temporary_data_root: bool
    env: dict[str, str] = field(default_factory=dict)

    def docker(
        self, *args: str, timeout: float, check: bool = True, input_bytes: bytes | None = None
    ) -> Finished:
        return run(
            [self.client, *args],
            timeout=timeout,
            env=self.env,
            check=check,
            input_bytes=input_bytes,
        )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def trim_cache(self) -> None:
        """Keep the cached data root bounded: every rebuild leaves a dangling multi-GB image
        and build cache behind. The newest cache (what the next run reuses) is kept."""
        self.docker("image", "prune", "-f", timeout=300, check=False)
        self.docker(
            "builder", "prune", "-f", "--keep-storage", CACHE_KEEP_STORAGE, timeout=300, check=False
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait; release the data root."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.lock_file is not None:
            self.lock_file.close()
        shutil.rmtree(self.exec_root, ignore_errors=True)
        if self.temporary_data_root:
            shutil.rmtree(self.data_root, ignore_errors=True)


def _claim_data_root() -> tuple[Path, IO[str] | None, bool]:
    """The cached data root if no other run holds it, else a throwaway one."""
    try:
        CACHE_ROOT.mkdir(parents=True, exist_ok=True)
        lock = (CACHE_ROOT / "docker-data.lock").open("w")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return CACHE_ROOT / "docker-data", lock, False
    except OSError:
        return Path(tempfile.mkdtemp(prefix="kerasserve-docker-data-")), None, True


def start_engine() -> DockerEngine:
    """Install what is missing, start dockerd in the background and wait until it answers."""
    reason = machine_can_host_engine()
    if reason is not None:
        raise EngineUnavailable(reason)
    install_packages()
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineUnavailable("docker.io is installed but dockerd is not on PATH")
    client = docker_client()
    # Unix socket paths are limited to 108 bytes and containerd puts sockets under the exec
    # root: keep it short, in /tmp.
    exec_root = Path(tempfile.mkdtemp(prefix="ksd-", dir="/tmp"))
    socket = exec_root / "docker.sock"
    data_root, lock, temporary = _claim_data_root()
    log_path = exec_root / "dockerd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                dockerd,
                "--data-root",
                str(data_root),
                "--exec-root",
                str(exec_root / "exec"),
                "--pidfile",
                str(exec_root / "docker.pid"),
                "-H",
                f"unix://{socket}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    engine = DockerEngine(
        process=process,
        socket=socket,
        exec_root=exec_root,
        data_root=data_root,
        log_path=log_path,
        client=client,
        lock_file=lock,
        temporary_data_root=temporary,
        env={
            **os.environ,
            "DOCKER_HOST": f"unix://{socket}",
            "DOCKER_BUILDKIT": "1",
            "COMPOSE_PROGRESS": "plain",
        },
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            engine.stop()
            raise EngineUnavailable(
                f"dockerd exited with status {process.returncode}:\n{engine.log_tail()}"
            )
        if socket.exists() and engine.docker("info", timeout=15, check=False).returncode == 0:
            return engine
        time.sleep(0.5)
    tail = engine.log_tail()
    engine.stop()
    raise EngineUnavailable(f"dockerd did not answer within {START_TIMEOUT_S:.0f}s:\n{tail}")

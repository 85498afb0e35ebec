"""Python wheels for the image build, fetched on the host and served to the build over HTTP.

Why: inside a build container pip cannot verify this network's TLS proxy, and downloading
TensorFlow again for every cold build is slow. The host's pip downloads the image's requirements
(deploy/docker/requirements.py, the same list the Dockerfile installs) into a cached folder, and a
small HTTP server on the host's loopback serves it as a pip "find-links" page. The build runs with
the host's network (`docker build --network host`), so its containers reach that loopback server
without depending on any address of the Docker bridge: on an engine that created its bridge
itself, `docker network inspect bridge` reports no gateway, and builds pointed at it failed. The
build then gets the Dockerfile's documented mirror build args (PIP_NO_INDEX, PIP_FIND_LINKS,
PIP_TRUSTED_HOST), so nothing in the Dockerfile is test-specific.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.deploy.engine import CACHE_ROOT
from tests.deploy.processes import run

REPO_ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = CACHE_ROOT / "wheelhouse"
PREFERRED_PORT = 38765
LOOPBACK = "127.0.0.1"


def download_wheels(variant: str = "cpu", target: Path = WHEELHOUSE) -> Path:
    """`pip download` the variant's requirements into `target` (already present files are kept)."""
    target.mkdir(parents=True, exist_ok=True)
    listed = run(
        [
            sys.executable,
            str(REPO_ROOT / "deploy/docker/requirements.py"),
            variant,
            str(REPO_ROOT / "pyproject.toml"),
        ],
        timeout=60,
    )
    requirements = target / f"requirements-{variant}.txt"
    stamp = target / f"requirements-{variant}.done.json"
    if _complete(stamp, listed.stdout, target):
        return target
    stamp.unlink(missing_ok=True)
    requirements.write_text(listed.stdout)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary",
            ":all:",
            "--dest",
            str(target),
            "--requirement",
            str(requirements),
        ],
        timeout=900,
    )
    files = sorted(path.name for path in target.glob("*.whl"))
    stamp.write_text(json.dumps({"requirements": listed.stdout, "files": files}))
    return target


def _complete(stamp: Path, requirements: str, target: Path) -> bool:
    """True when a previous download of exactly these requirements left all its files here
    (saves pip's index round trips, about 30 s; any doubt means downloading again)."""
    try:
        done = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return (
        done.get("requirements") == requirements
        and bool(done.get("files"))
        and all((target / name).is_file() for name in done["files"])
    )


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        """Requests are not logged: pip fetches dozens of files."""


@dataclass
class WheelServer:
    """A find-links HTTP server for `directory`, bound to `host`, running in a daemon thread."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    host: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}/"

    def build_args(self) -> list[str]:
        """`docker build` options that make pip install from this server only: the host's
        network (the server listens on the host's loopback) and pip's mirror settings."""
        return [
            "--network",
            "host",
            "--build-arg",
            "PIP_NO_INDEX=1",
            "--build-arg",
            f"PIP_FIND_LINKS={self.url}",
            "--build-arg",
            f"PIP_TRUSTED_HOST={self.host}",
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def serve_wheels(directory: Path, host: str = LOOPBACK) -> WheelServer:
    """Serve on PREFERRED_PORT when free: the URL is a build arg, and build args are part of
    Docker's cache key, so a port that changes every run would rebuild the TensorFlow layer."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        server = ThreadingHTTPServer((host, PREFERRED_PORT), handler)
    except OSError:
        server = ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="wheelhouse", daemon=True)
    thread.start()
    return WheelServer(server=server, thread=thread, host=host)

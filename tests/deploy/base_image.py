"""The local stand-in for `python:3.11-slim`, for machines that cannot pull from a registry.

Recipe (from the shared containers note): debootstrap a minimal Debian bookworm from the mirror
this machine's apt already uses, `docker import` it, and build standin/Dockerfile on top (Debian's
python3 is 3.11) under the tag `python:3.11-slim`. The product Dockerfile then builds unchanged.
When the tag already exists in the engine (a real pull, or the cached stand-in) nothing is done.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.deploy.engine import DockerEngine, EngineUnavailable
from tests.deploy.processes import CommandFailed, run

BASE_TAG = "python:3.11-slim"
MINBASE_TAG = "local/debian-minbase:bookworm"
STANDIN_DIR = Path(__file__).with_name("standin")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


def debian_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str:
    """The Debian archive URI this machine's apt uses (deb822 or one-line format)."""
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and "bookworm" in suites.group(1).split():
                return uris.group(1)
        one_line = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", text, re.MULTILINE)
        if one_line:
            return one_line.group(1)
    return DEFAULT_MIRROR


def has_image(engine: DockerEngine, tag: str) -> bool:
    return engine.docker("image", "inspect", tag, timeout=30, check=False).returncode == 0


def ensure_base_image(engine: DockerEngine) -> str:
    """Make `python:3.11-slim` available in `engine`; return how ("present" or "stand-in")."""
    if has_image(engine, BASE_TAG):
        return "present"
    ensure_minbase_image(engine)
    engine.docker("build", "-t", BASE_TAG, str(STANDIN_DIR), timeout=600)
    return "stand-in"


def ensure_minbase_image(engine: DockerEngine) -> None:
    """Make the minimal Debian bookworm image (`MINBASE_TAG`) available in `engine`: the base of
    the python:3.11-slim stand-in, and the stand-in for the CUDA base of the GPU stages."""
    if has_image(engine, MINBASE_TAG):
        return
    if shutil.which("debootstrap") is None:
        raise EngineUnavailable(
            "debootstrap is missing: cannot build the python:3.11-slim stand-in"
        )
    rootfs = Path(tempfile.mkdtemp(prefix="kerasserve-rootfs-"))
    try:
        run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()],
            timeout=600,
        )
        _import_rootfs(engine, rootfs)
    except CommandFailed as exc:
        raise EngineUnavailable(f"debootstrap of Debian bookworm failed:\n{exc}") from exc
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _import_rootfs(engine: DockerEngine, rootfs: Path) -> None:
    """`tar -C rootfs -c . | docker import - local/debian-minbase:bookworm`, bounded."""
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        imported = subprocess.run(
            [engine.client, "import", "-", MINBASE_TAG],
            env=engine.env,
            stdin=tar.stdout,
            capture_output=True,
            timeout=300,
            check=False,
        )
        tar.wait(timeout=60)
    if imported.returncode != 0 or tar.returncode != 0:
        raise EngineUnavailable(
            f"docker import of the Debian rootfs failed: "
            f"{imported.stderr.decode(errors='replace')[-2000:]}"
        )

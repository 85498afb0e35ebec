"""Copy the image's bundled model versions into an external model repository, atomically.

Why: on Kubernetes the model repository is a PersistentVolumeClaim that starts empty (Docker
seeds an empty named volume from the image by itself; Kubernetes does not). An init container
runs this before the server starts. It follows the publishing rule of models/README.md: each
missing version is copied into a hidden `.tmp-*` folder and renamed into place in one
`rename(2)`, so a server already watching the volume (another replica) never sees a partial
version. Versions that already exist are never touched, so newer trained versions survive pod
restarts, and several pods may seed at once. Standard library only.

Usage: python seed_repository.py SOURCE TARGET   (e.g. /models /repository)
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPOSITORY_FILES = ("config.yaml",)


def bundled_versions(source: Path) -> list[Path]:
    """`<name>/<version>` folders of `source`, versions being all-digit folder names."""
    return sorted(
        version
        for model in source.iterdir()
        if model.is_dir()
        for version in model.iterdir()
        if version.is_dir() and version.name.isdigit()
    )


def seed(source: Path, target: Path) -> list[Path]:
    """Copy every version of `source` missing in `target`; return the versions copied."""
    copied: list[Path] = []
    for version in bundled_versions(source):
        destination = target / version.parent.name / version.name
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = destination.parent / f".tmp-{version.name}-seed-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(version, staging)
        try:
            staging.rename(destination)
        except OSError:  # another pod published the same version first
            shutil.rmtree(staging, ignore_errors=True)
            continue
        copied.append(destination)
    for name in REPOSITORY_FILES:
        if (source / name).is_file() and not (target / name).exists():
            shutil.copy2(source / name, target / name)
    return copied


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    source, target = Path(argv[1]), Path(argv[2])
    if not target.is_dir():
        raise SystemExit(f"target repository {target} is not a directory (is the volume mounted?)")
    for destination in seed(source, target):
        print(f"seeded {destination}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

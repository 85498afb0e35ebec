"""Print the pip requirements of one image variant, read from pyproject.toml.

Why this exists: the project installs exactly one TensorFlow distribution, `tensorflow` (the
one tensorflow-serving-api requires); the GPU image wants it with its CUDA libraries,
`tensorflow[and-cuda]` (the `gpu` extra). The GPU image therefore installs the base dependencies
with the plain TensorFlow requirement replaced by the `gpu` extra's, and the project itself with
`--no-deps`; `tensorflow-cpu` is never listed, so no second distribution of the `tensorflow`
module can overwrite the first. The `train` extra is included: the image runs the training CLI
too. Reading the list from pyproject.toml keeps one source of truth, and installing it before the
source code is copied lets Docker cache the heavy layer across code changes.
The build backend (`[build-system] requires`) is listed too, so the project wheel is built later
with `--no-build-isolation`, without a second trip to the package index.

Usage: python requirements.py {cpu,gpu} [path/to/pyproject.toml]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

TENSORFLOW_DISTRIBUTIONS = {"tensorflow", "tensorflow-cpu"}


def distribution_name(requirement: str) -> str:
    """The normalised project name at the start of a PEP 508 requirement string."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(variant: str, pyproject: Path) -> list[str]:
    document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = document["project"]
    build_backend: list[str] = list(document["build-system"]["requires"])
    # The image holds the training CLI too (the compose trainer and the Kubernetes Jobs run it).
    base: list[str] = list(project["dependencies"]) + list(
        project["optional-dependencies"]["train"]
    )
    if variant == "cpu":
        return base + build_backend
    if variant == "gpu":
        without_tensorflow = [
            r for r in base if distribution_name(r) not in TENSORFLOW_DISTRIBUTIONS
        ]
        return without_tensorflow + list(project["optional-dependencies"]["gpu"]) + build_backend
    raise SystemExit(f"unknown variant {variant!r}: expected cpu or gpu")


def main(argv: list[str]) -> int:
    if not 2 <= len(argv) <= 3:
        raise SystemExit(__doc__)
    pyproject = Path(argv[2]) if len(argv) == 3 else Path("pyproject.toml")
    print("\n".join(requirements(argv[1], pyproject)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

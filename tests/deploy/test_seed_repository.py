"""deploy/docker/seed_repository.py: how Kubernetes pods fill an empty model volume."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.deploy.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "deploy" / "docker" / "seed_repository.py"


def load_seeder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seed_repository", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_version(root: Path, name: str, version: str, marker: str) -> None:
    folder = root / name / version
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_text(marker)
    (folder / "metadata.json").write_text("{}")


def test_empty_volume_gets_every_bundled_version(tmp_path: Path) -> None:
    source, target = tmp_path / "image", tmp_path / "volume"
    target.mkdir()
    make_version(source, "mnist", "1", "m1")
    make_version(source, "ocr", "1", "o1")
    (source / "mnist" / ".tmp-2-abc").mkdir()  # an interrupted publish is not a version
    (source / "config.yaml").write_text("models: {}\n")
    copied = load_seeder().seed(source, target)
    assert sorted(p.relative_to(target).as_posix() for p in copied) == ["mnist/1", "ocr/1"]
    assert (target / "mnist/1/saved_model.pb").read_text() == "m1"
    assert (target / "mnist/1/variables").is_dir()
    assert (target / "config.yaml").is_file()
    assert sorted(p.name for p in (target / "mnist").iterdir()) == ["1"]  # no staging left


def test_existing_versions_and_config_are_never_overwritten(tmp_path: Path) -> None:
    source, target = tmp_path / "image", tmp_path / "volume"
    make_version(source, "mnist", "1", "bundled")
    make_version(target, "mnist", "1", "trained")
    make_version(target, "mnist", "2", "trained-later")
    (source / "config.yaml").write_text("bundled")
    (target / "config.yaml").write_text("operator's")
    assert load_seeder().seed(source, target) == []
    assert (target / "mnist/1/saved_model.pb").read_text() == "trained"
    assert (target / "config.yaml").read_text() == "operator's"


def test_command_line_refuses_a_missing_volume(tmp_path: Path) -> None:
    make_version(tmp_path / "image", "mnist", "1", "m1")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "image"), str(tmp_path / "not-mounted")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "not a directory" in done.stderr

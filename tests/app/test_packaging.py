"""What `pip install .` gives: the server alone; training's data dependency is an extra."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[~=<>;! ]", line, maxsplit=1)[0].lower() for line in requirements}


def test_the_server_install_has_no_training_data_dependency() -> None:
    assert "mlxtend" not in _names(PROJECT["dependencies"])
    assert "mlxtend" in _names(PROJECT["optional-dependencies"]["train"])
    assert "kerasserve" in _names(PROJECT["optional-dependencies"]["test"])


def test_one_tensorflow_distribution_in_every_install() -> None:
    base = _names(PROJECT["dependencies"])
    assert "tensorflow" in base and "tensorflow-cpu" not in base
    gpu = PROJECT["optional-dependencies"]["gpu"]
    assert all(line.startswith("tensorflow[and-cuda]") for line in gpu)


def test_the_service_never_imports_training_code_or_its_data_package() -> None:
    offenders = []
    for path in sorted((REPO_ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(REPO_ROOT)}: {module}"
                for module in modules
                if module.split(".")[0] in {"training", "mlxtend"}
            ]
    assert offenders == []

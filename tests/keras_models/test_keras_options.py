"""The two Keras options as flags and as `KERASSERVE_*` variables (the flag wins)."""

from __future__ import annotations

import pytest

from app.__main__ import parse_settings


def test_flags_repeat_and_reach_the_loader_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERASSERVE_CUSTOM_OBJECTS_MODULES", raising=False)
    monkeypatch.delenv("KERASSERVE_ALLOW_UNSAFE_DESERIALIZATION", raising=False)
    defaults = parse_settings([]).keras_options()
    assert defaults.custom_objects_modules == () and not defaults.allow_unsafe_deserialization
    options = parse_settings(
        [
            "--custom-objects-module",
            "a.layers",
            "--custom-objects-module",
            "b",
            "--allow-unsafe-deserialization",
        ]  # fmt: skip
    ).keras_options()
    assert options.custom_objects_modules == ("a.layers", "b")
    assert options.allow_unsafe_deserialization


def test_environment_is_comma_separated_and_the_flag_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KERASSERVE_CUSTOM_OBJECTS_MODULES", "x.layers, y")
    monkeypatch.setenv("KERASSERVE_ALLOW_UNSAFE_DESERIALIZATION", "true")
    options = parse_settings([]).keras_options()
    assert options.custom_objects_modules == ("x.layers", "y")
    assert options.allow_unsafe_deserialization
    flagged = parse_settings(["--custom-objects-module", "z"]).keras_options()
    assert flagged.custom_objects_modules == ("z",)

"""The transport-free token rules (`app.security.tokens`) and how settings supply tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.errors import Forbidden, Unauthorized
from app.security import Access, InvalidTokenError, TokenGuard
from app.settings import Settings, TokenFileError
from tests.live_server import REPO_ROOT

API, ADMIN = "api-secret-1", "admin-secret-1"


def outcome(guard: TokenGuard, access: Access, authorization: str | None) -> int:
    """200 when the guard lets the request through, else the status it raised."""
    try:
        guard.check(access, authorization)
    except (Unauthorized, Forbidden) as exc:
        return exc.status_code
    return 200


@pytest.mark.parametrize(
    ("access", "authorization", "expected"),
    [
        (Access.OPEN, None, 200),
        (Access.OPEN, "Bearer wrong", 200),
        (Access.API, None, 401),
        (Access.API, "Bearer wrong", 401),
        (Access.API, f"Basic {API}", 401),
        (Access.API, f"Bearer {API}", 200),
        (Access.API, f"bearer  {API} ", 200),
        (Access.API, f"Bearer {ADMIN}", 200),  # an admin token may do what an API token may
        (Access.API, f"Bearer {API}x", 401),
        (Access.API, f"Bearer {API[:-1]}", 401),
        (Access.API, "Bearer ", 401),
        (Access.ADMIN, None, 401),
        (Access.ADMIN, "Bearer wrong", 401),
        (Access.ADMIN, f"Bearer {API}", 403),
        (Access.ADMIN, f"Bearer {ADMIN}", 200),
        (Access.ADMIN, "Bearer ädmin", 401),
    ],
)
def test_rules_with_both_kinds_of_token(
    access: Access, authorization: str | None, expected: int
) -> None:
    assert outcome(TokenGuard([API], [ADMIN]), access, authorization) == expected


def test_without_tokens_the_api_is_open_and_the_admin_routes_are_closed() -> None:
    guard = TokenGuard()
    assert not guard.api_required and not guard.admin_enabled
    assert outcome(guard, Access.API, None) == 200
    with pytest.raises(Forbidden) as refused:
        guard.check(Access.ADMIN, f"Bearer {ADMIN}")
    assert "--admin-token" in refused.value.message
    assert "KERASSERVE_ADMIN_TOKENS" in refused.value.message


def test_admin_tokens_alone_leave_the_api_open() -> None:
    guard = TokenGuard(admin_tokens=[ADMIN])
    assert guard.admin_enabled and not guard.api_required
    assert outcome(guard, Access.API, None) == 200
    assert outcome(guard, Access.ADMIN, None) == 401
    assert outcome(guard, Access.ADMIN, f"Bearer {ADMIN}") == 200


def test_401_asks_for_a_bearer_token_and_no_message_holds_a_token() -> None:
    guard = TokenGuard([API, "second-api-token"], [ADMIN])
    for access, authorization in [
        (Access.API, "Bearer guess-123"),
        (Access.ADMIN, None),
        (Access.ADMIN, f"Bearer {API}"),
        (Access.API, None),
    ]:
        with pytest.raises((Unauthorized, Forbidden)) as refused:
            guard.check(access, authorization)
        text = f"{refused.value.message} {refused.value!r} {refused.value.headers}"
        for secret in (API, "second-api-token", ADMIN, "guess-123"):
            assert secret not in text
        if refused.value.status_code == 401:
            assert refused.value.headers == {"WWW-Authenticate": "Bearer"}
    assert API not in repr(guard) and ADMIN not in repr(guard)


def test_every_configured_token_is_accepted_and_blank_ones_are_ignored() -> None:
    guard = TokenGuard(["a-one", " ", "a-two"], ["", "b-one"])
    assert all(outcome(guard, Access.API, f"Bearer {t}") == 200 for t in ("a-one", "a-two"))
    assert outcome(guard, Access.API, "Bearer  ") == 401


@pytest.mark.parametrize("bad", ["has,comma", "has space", "tab\tinside", "nön-ascii"])
def test_tokens_a_header_cannot_carry_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(InvalidTokenError) as refused:
        TokenGuard(api_tokens=[bad])
    assert bad not in str(refused.value)


def test_settings_read_comma_separated_variables_and_token_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api_file = tmp_path / "api-tokens"
    api_file.write_text("file-api-1\n\n  file-api-2  \n")
    admin_file = tmp_path / "admin-token"
    admin_file.write_text("file-admin\n")
    monkeypatch.setenv("KERASSERVE_API_TOKENS", "env-api-1, env-api-2")
    monkeypatch.setenv("KERASSERVE_ADMIN_TOKENS", "env-admin")
    monkeypatch.setenv("KERASSERVE_API_TOKEN_FILE", str(api_file))
    monkeypatch.setenv("KERASSERVE_ADMIN_TOKEN_FILE", str(admin_file))
    monkeypatch.setenv("KERASSERVE_CORS_ORIGINS", "https://a.example,https://b.example")
    settings = Settings()
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert "env-api-1" not in repr(settings) and "env-admin" not in repr(settings)
    guard = settings.token_guard()
    for token in ("env-api-1", "env-api-2", "file-api-1", "file-api-2"):
        assert outcome(guard, Access.API, f"Bearer {token}") == 200
        assert outcome(guard, Access.ADMIN, f"Bearer {token}") == 403
    for token in ("env-admin", "file-admin"):
        assert outcome(guard, Access.ADMIN, f"Bearer {token}") == 200


def test_unreadable_or_empty_token_files_fail_closed(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# no token yet\n\n \n")
    for path in (tmp_path / "missing", empty):
        with pytest.raises(TokenFileError) as refused:
            Settings(api_token_file=path).token_guard()  # would leave the API open
        assert path.name in str(refused.value)
    with pytest.raises(TokenFileError):
        Settings(admin_token_file=tmp_path / "missing").token_guard()
    guard = Settings(admin_token_file=empty).token_guard()  # model control stays off
    assert not guard.admin_enabled
    assert outcome(guard, Access.ADMIN, "Bearer # no token yet") == 403


def test_token_files_skip_comment_lines(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotated 2026-11\nfirst-token\n  # old: gone-token\nsecond-token\n")
    guard = Settings(admin_token_file=tokens).token_guard()
    assert outcome(guard, Access.ADMIN, "Bearer first-token") == 200
    assert outcome(guard, Access.ADMIN, "Bearer second-token") == 200
    assert outcome(guard, Access.ADMIN, "Bearer gone-token") == 401


def test_tokens_survive_the_export_to_worker_processes() -> None:
    """Several workers read their settings from the environment `_export` writes."""
    from app.__main__ import _export, parse_settings

    saved = dict(os.environ)
    try:
        for name in [name for name in os.environ if name.startswith("KERASSERVE_")]:
            del os.environ[name]
        settings = parse_settings(
            [
                "--api-token",
                "cli-api-1",
                "--api-token",
                "cli-api-2",
                "--admin-token",
                "cli-admin",
                "--cors-origin",
                "https://a.example",
                "--cors-origin",
                "https://b.example",
            ]
        )
        _export(settings)
        assert os.environ["KERASSERVE_API_TOKENS"] == "cli-api-1,cli-api-2"
        worker = Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert worker.cors_origins == ("https://a.example", "https://b.example")
    guard = worker.token_guard()
    assert outcome(guard, Access.API, "Bearer cli-api-2") == 200
    assert outcome(guard, Access.ADMIN, "Bearer cli-admin") == 200
    assert outcome(guard, Access.ADMIN, "Bearer cli-api-1") == 403


def test_python_m_app_stops_at_a_missing_token_file_without_printing_tokens(tmp_path: Path) -> None:
    env = {**os.environ, "KERASSERVE_API_TOKENS": "never-printed-token"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "--model-repository",
            str(tmp_path),
            "--admin-token-file",
            str(tmp_path / "no-such-file"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no-such-file" in result.stderr
    assert "never-printed-token" not in result.stderr + result.stdout

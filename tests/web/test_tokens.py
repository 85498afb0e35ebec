"""The page on a server that wants tokens: it asks once, keeps the token for the tab only, and
shows the admin-only repository index once the admin token is given."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.live_server import REPO_ROOT, LiveServer, live_server
from tests.web.conftest import DESKTOP, PageRecord, artifacts_dir
from tests.web.repository import build_scaler

API_TOKEN = "page-test-api-token"
ADMIN_TOKEN = "page-test-admin-token"


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    repository = build_scaler(tmp_path_factory.mktemp("guarded-repository"), env)
    args = [
        "--device",
        "cpu",
        "--log-level",
        "warning",
        "--poll-interval",
        "0",
        "--api-token",
        API_TOKEN,
        "--admin-token",
        ADMIN_TOKEN,
    ]
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    # Live: Chromium loads the page from a URL.
    with live_server(
        repository, tmp_path_factory.mktemp("guarded-logs"), args, headers=headers
    ) as running:
        yield running


def test_page_asks_for_the_token_once_and_keeps_it_for_the_tab(
    browser: object, guarded_server: LiveServer
) -> None:
    assert httpx.get(f"{guarded_server.url}/v1/models/scaler").status_code == 401
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[attr-defined]
    page = context.new_page()
    record = PageRecord(expected_errors=["status of 401"])  # the first, tokenless answers
    page.on(
        "console", lambda m: record.console_errors.append(m.text) if m.type == "error" else None
    )
    page.on("pageerror", lambda error: record.page_errors.append(str(error)))
    page.on("request", lambda request: record.requests.append(request.url))
    try:
        page.goto(f"{guarded_server.url}/#/models")
        dialog = page.locator("#token-dialog")
        dialog.wait_for(state="visible")
        assert "bearer token" in page.inner_text("#token-reason")
        page.screenshot(path=str(artifacts_dir() / "token-dialog-desktop.png"))
        page.fill("#token-dialog input[name=token]", API_TOKEN)
        page.click("#token-dialog button[value=ok]")
        page.wait_for_selector("#view[data-ready=true]")
        assert page.locator("[data-testid=model-scaler]").count() == 1
        assert not dialog.is_visible()
        stored = page.evaluate("sessionStorage.getItem('kerasserve.token')")
        assert stored == API_TOKEN
        assert page.evaluate("localStorage.length") == 0  # for this tab only

        page.reload()  # same tab: no second question
        page.wait_for_selector("#view[data-ready=true]")
        assert not dialog.is_visible()

        # Admin routes: closed until the admin token is given, then the index shows.
        page.fill(".admin input[type=password]", ADMIN_TOKEN)
        page.click(".admin button[type=submit]")
        page.wait_for_selector(".admin table.data")
        assert "READY" in page.inner_text(".admin table.data")
        page.screenshot(path=str(artifacts_dir() / "models-with-admin-desktop.png"), full_page=True)
    finally:
        context.close()
    assert not record.unexpected_errors(), record.unexpected_errors()
    assert {httpx.URL(url).host for url in record.requests} == {"127.0.0.1"}

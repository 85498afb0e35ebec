"""Fixtures for the page tests: a real server, Debian's Chromium driven by Playwright.

One server for the module session (`tests.web.repository` builds its repository, with a tiny
mnist version trained by the real CLI), one headless Chromium, and per test a fresh page whose
console errors and request URLs are recorded: a test fails if the page logged an error it did
not expect or asked any host but the server's 127.0.0.1 for anything.

Screenshots go to `KERASSERVE_WEB_ARTIFACTS` (default `tests/web/artifacts/`, git-ignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.live_server import REPO_ROOT, LiveServer, live_server
from tests.web.repository import build_repository

CHROMIUM = Path(os.environ.get("KERASSERVE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 30_000


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("KERASSERVE_WEB_ARTIFACTS", REPO_ROOT / "tests/web/artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def web_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TF_CONFIG", None)
    return build_repository(tmp_path_factory.mktemp("web-repository"), env)


@pytest.fixture(scope="session")
def web_server(
    web_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    args = ["--device", "cpu", "--log-level", "warning", "--poll-interval", "0"]
    # Live: Chromium loads the page from a URL.
    with live_server(web_repository, tmp_path_factory.mktemp("web-logs"), args) as running:
        yield running


@pytest.fixture()
def api(web_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web_server.url, timeout=60.0) as client:
        yield client


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    """Chromium for this package's tests, closed after them: Playwright's sync API keeps an event
    loop running in the main thread while it is open, and in-process tests that ran after it in
    the same session (`asyncio.run`) failed with "cannot be called from a running event loop"."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: .ci/run installs Debian's chromium (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class PageRecord:
    """What one page did: console errors, uncaught exceptions, every URL it requested."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    expected_errors: list[str] = field(default_factory=list)  # substrings a test allows

    def unexpected_errors(self) -> list[str]:
        return [
            text
            for text in self.console_errors + self.page_errors
            if not any(allowed in text for allowed in self.expected_errors)
        ]


class Pages:
    """Opens pages on the server and checks, when the test ends, what each page did."""

    def __init__(self, browser: object, server: LiveServer) -> None:
        self.browser = browser
        self.server = server
        self.opened: list[tuple[object, PageRecord]] = []

    def open(
        self,
        view: str = "",
        viewport: dict[str, int] | None = None,
    ) -> tuple[object, PageRecord]:
        context = self.browser.new_context(
            viewport=viewport or DESKTOP,  # type: ignore[attr-defined]
            device_scale_factor=1,
        )
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        record = PageRecord()
        page.on(
            "console",
            lambda message: (
                record.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: record.page_errors.append(str(error)))
        page.on("request", lambda request: record.requests.append(request.url))
        self.opened.append((context, record))
        page.goto(f"{self.server.url}/{view}")
        return page, record

    def check_and_close(self) -> None:
        problems = []
        for context, record in self.opened:
            hosts = {
                urlsplit(url).hostname
                for url in record.requests
                if not url.startswith(("data:", "blob:"))
            }
            if hosts - {"127.0.0.1"}:
                problems.append(f"requests to other hosts: {sorted(hosts)}")
            if not record.requests:
                problems.append("the page requested nothing")
            if record.unexpected_errors():
                problems.append(f"console errors: {record.unexpected_errors()}")
            context.close()  # type: ignore[attr-defined]
        assert not problems, problems


@pytest.fixture()
def pages(browser: object, web_server: LiveServer) -> Iterator[Pages]:
    opened = Pages(browser, web_server)
    try:
        yield opened
    finally:
        opened.check_and_close()


def screenshot(page: object, name: str) -> Path:
    """Save a full-page screenshot as a test artifact; returns its path."""
    path = artifacts_dir() / f"{name}.png"
    # Readable at this size: nothing wider than the window (no sideways scrolling).
    widths = page.evaluate(  # type: ignore[attr-defined]
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert widths[0] <= widths[1], f"{name}: the page is {widths[0]} px wide in {widths[1]} px"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky bar at the top, where it belongs
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path

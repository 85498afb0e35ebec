"""Suite-wide rule: under CI=true a skip or an xfail fails the run unless its reason is allowed.

Why: a skipped test on CI looks green and hides whatever it was meant to check (a missing
install step, a deployment that no longer hot-reloads). The only allowed reasons are facts about
a machine that CI's machine legitimately differs by; each one names that fact. Everything else
(models missing, a Docker engine that could not start, an environment variable that switches
tests off) fails the run with the reason it would have skipped with.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

# Servers started by tests serve no gRPC unless a test gives them a port (`--grpc-port`): the
# default port is one per machine, and servers of concurrent test runs would fight over it.
os.environ.setdefault("KERASSERVE_GRPC_PORT", "0")

#: Reasons (prefixes) a test may be skipped or xfailed for under CI=true.
ALLOWED_CI_SKIP_REASONS: tuple[str, ...] = (
    # The CPU-only checks describe a machine without a GPU; a GPU machine runs bench/gpu_check.
    "this machine has a GPU",
    # The offline-fallback checks need a machine that cannot reach the MNIST download host.
    "this machine can download MNIST",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped or xfailed report gives, without pytest's location prefix."""
    if getattr(report, "wasxfail", None) is not None:
        return f"xfail: {report.wasxfail}"  # type: ignore[union-attr]
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def allowed_on_ci(reason: str) -> bool:
    return any(reason.startswith(allowed) for allowed in ALLOWED_CI_SKIP_REASONS)


def _fail_if_not_allowed(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not (in_ci() and report.skipped):
        return
    reason = skip_reason(report)
    if allowed_on_ci(reason):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped on CI for a reason that is not on the allow-list in tests/conftest.py: {reason}"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, None, None]:
    outcome = yield
    _fail_if_not_allowed(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, None, None]:
    outcome = yield
    _fail_if_not_allowed(outcome.get_result())

"""The suite defends its own time budget: after every run it prints the ten slowest tests (setup, call and
teardown together, so a session fixture's cost lands on the test that first asked for it), and in the quick mode
of `make test` it fails the run when pytest's own wall time passes the budget, naming those ten.

The budget is 25 minutes (1,500 s) of pytest wall time; `HAI_SUITE_BUDGET_S` sets another (0 turns the check
off). `make test-full` has no budget unless `HAI_SUITE_BUDGET_S` is set: it runs the release-build checks.

Loaded by `tests/conftest.py`; `tests/test_suite_budget.py` runs it in a pytest of its own."""

from __future__ import annotations

import os
import time
from collections import defaultdict

import pytest

BUDGET_S = 1500.0
SLOWEST = 10

_started: list[float] = []
_spent: dict[str, float] = defaultdict(float)
_verdict: list[str] = []


def full_mode(config: pytest.Config) -> bool:
    """`make test-full` (`pytest --full` or HAI_TEST_MODE=full): the release-build checks run, no budget applies."""
    return bool(config.getoption("--full", default=False)) or os.environ.get("HAI_TEST_MODE") == "full"


def budget_s(config: pytest.Config) -> float | None:
    """Seconds the run may take, or None where no budget applies (full mode, or 0 given)."""
    given = os.environ.get("HAI_SUITE_BUDGET_S")
    if given is not None:
        try:
            seconds = float(given)
        except ValueError:
            raise pytest.UsageError(f"HAI_SUITE_BUDGET_S={given!r}: give seconds (0 turns it off)") from None
        return seconds if seconds > 0 else None
    return None if full_mode(config) else BUDGET_S


def slowest(spent: dict[str, float], count: int = SLOWEST) -> list[tuple[str, float]]:
    return sorted(spent.items(), key=lambda item: (-item[1], item[0]))[:count]


def verdict(wall_s: float, budget: float | None, spent: dict[str, float]) -> tuple[bool, list[str]]:
    """(over budget, lines to print): the ten slowest always, and the refusal when the wall time passed it."""
    top = slowest(spent)
    lines = [f"{seconds:8.1f}s  {nodeid}" for nodeid, seconds in top]
    if budget is None:
        return False, [f"suite wall time {wall_s:.1f}s (no budget in this mode); slowest tests:", *lines]
    if wall_s <= budget:
        return False, [
            f"suite wall time {wall_s:.1f}s within its budget of {budget:g}s; slowest tests:",
            *lines,
        ]
    return True, [
        f"suite budget: FAILED: pytest's wall time {wall_s:.1f}s passed the budget of {budget:g}s "
        f"(HAI_SUITE_BUDGET_S); the {len(top)} slowest tests:",
        *lines,
    ]


def pytest_sessionstart(session: pytest.Session) -> None:
    _started[:] = [time.monotonic()]
    _spent.clear()
    _verdict.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _spent[report.nodeid] += report.duration


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _started or getattr(session.config.option, "collectonly", False):
        return
    wall = time.monotonic() - _started[0]
    over, lines = verdict(wall, budget_s(session.config), _spent)
    _verdict[:] = lines
    if over and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _verdict:
        return
    terminalreporter.section("suite budget", sep="=", bold=True)
    for line in _verdict:
        terminalreporter.write_line(line)

"""The chaos suite's session hook: the figures the scenarios recorded, printed as one table at the end."""

from __future__ import annotations

import pytest

from tests.chaos.harness import LONG, RECORDED, table


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RECORDED:
        from dataclasses import asdict

        terminalreporter.section(f"chaos figures ({'long' if LONG else 'short'} parameters)")
        terminalreporter.write_line(table(asdict(f) for f in RECORDED))

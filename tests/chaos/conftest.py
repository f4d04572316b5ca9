"""The fault-injection suite (``make chaos``): real cells under open-loop load.

Each test measures the cell first (closed-loop capacity with wrk), drives it at a
fraction of that with ``cellwork.testing.driver``, injects its fault, and asserts
counts (failed requests, lost or doubled events). What it measured goes into one
table printed at the end of the run: README's *Resilience* table is copied from it.
A run whose own client fell behind its schedule is inconclusive: it is run again.
"""

from __future__ import annotations

import pytest

from tests.chaos.measured import RESULTS

pytestmark = pytest.mark.chaos


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("resilience: what each scenario measured")
    for row in RESULTS:
        terminalreporter.line(f"{row.scenario}")
        for name, value in row.measured.items():
            terminalreporter.line(f"    {name}: {value}")

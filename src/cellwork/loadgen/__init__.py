"""``cellwork loadgen``: drive a cell through its public HTTP and WebSocket contract.

- ``stats``: the mix, the open-loop schedule, percentiles and counters (no I/O).
- ``driver``: one run: sign up users, hold sockets, send the mix at the target rate.
- ``report``: the live progress line and the summary tables.
"""

from cellwork.loadgen.driver import LoadConfig, LoadgenError, LoadRun, Progress
from cellwork.loadgen.report import render_summary, run_with_progress
from cellwork.loadgen.stats import DEFAULT_MIX, Mix, Pacer, parse_mix

__all__ = [
    "DEFAULT_MIX",
    "LoadConfig",
    "LoadRun",
    "LoadgenError",
    "Mix",
    "Pacer",
    "Progress",
    "parse_mix",
    "render_summary",
    "run_with_progress",
]

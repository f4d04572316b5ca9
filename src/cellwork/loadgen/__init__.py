"""``cellwork loadgen``: open-loop load for any service, driven by a scenario module.

The engine knows no service: a scenario says how to get ready, what one request of
its mix is and what else to report (``Scenario``); the engine sends on schedule,
bounds what is in flight, counts, and reports.

- ``scenario``: the ``Scenario`` base, ``Outcome``, ``RunContext`` a scenario is given.
- ``engine``: one run: the schedule, the in-flight bound, send lag, the summary.
- ``pacing``, ``mix``, ``stats``: the arithmetic (no I/O): schedule, weighted routes,
  percentiles and counters.
- ``pools``: HTTP client pools sized for a run.
- ``loading``: ``--scenario MODULE`` and the scenario's own options.
- ``report``: the live progress line and the summary tables.
- ``http``: the smallest scenario (one method on one URL), the example to copy.
"""

from cellwork.loadgen.engine import LoadConfig, LoadRun, Progress
from cellwork.loadgen.loading import (
    LoadedScenario,
    ScenarioLoadError,
    ScenarioUsage,
    load_scenario,
    print_scenario_help,
)
from cellwork.loadgen.mix import Mix, parse_mix
from cellwork.loadgen.pacing import Pacer
from cellwork.loadgen.pools import HttpPools, http_pools
from cellwork.loadgen.report import render_summary, run_with_progress
from cellwork.loadgen.scenario import LoadgenError, Outcome, RunContext, Scenario, failure_kind
from cellwork.loadgen.stats import RouteStats, Samples, milliseconds, percentile

__all__ = [
    "HttpPools",
    "LoadConfig",
    "LoadRun",
    "LoadedScenario",
    "LoadgenError",
    "Mix",
    "Outcome",
    "Pacer",
    "Progress",
    "RouteStats",
    "RunContext",
    "Samples",
    "Scenario",
    "ScenarioLoadError",
    "ScenarioUsage",
    "failure_kind",
    "http_pools",
    "load_scenario",
    "milliseconds",
    "parse_mix",
    "percentile",
    "print_scenario_help",
    "render_summary",
    "run_with_progress",
]

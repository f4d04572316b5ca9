"""One run through the engine with scenarios of a few lines: counts, bound, lag, lifecycle."""

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from cellwork.loadgen import LoadConfig, LoadgenError, LoadRun, Outcome, RunContext, Scenario
from tests.waiting import wait_until


@dataclass
class Log:
    """What a test scenario saw; shared by its session and its requests."""

    events: list[str] = field(default_factory=list)
    performed: int = 0


class Recorded(Scenario[Log]):
    """Answers at once, alternating two routes; every third answer is a 503."""

    def __init__(self) -> None:
        self.log = Log()

    @asynccontextmanager
    async def session(self, run: RunContext):
        self.log.events.append("set up")
        yield self.log
        self.log.events.append(f"torn down after {self.log.performed}")

    async def perform(self, state: Log) -> Outcome:
        state.performed += 1
        route = "read" if state.performed % 2 else "write"
        return Outcome.of_status(route, 503 if state.performed % 3 == 0 else 200)

    def progress(self, state: Log):
        return {"performed": state.performed}

    def sections(self, state: Log):
        return {"log": {"performed": state.performed, "events": len(state.events)}}


async def test_every_planned_request_is_sent_counted_and_answered_before_the_tear_down():
    scenario = Recorded()
    run = LoadRun(LoadConfig(rate=200, duration=0.25), scenario, name="recorded", seed=1)
    summary = await run.run()

    assert summary["requests"]["planned"] == 50
    assert summary["requests"] | {"rps": 0} == {
        "planned": 50, "sent": 50, "completed": 50, "ok": 34, "errors": 16, "dropped": 0,
        "rps": 0, "stopped_early": False,
    }  # fmt: skip
    assert summary["routes"]["read"]["count"] == summary["routes"]["write"]["count"] == 25
    assert summary["errors_by_status"] == {"503": 16}
    assert scenario.log.events == ["set up", "torn down after 50"]
    assert summary["sections"] == {"log": {"performed": 50, "events": 2}}
    assert summary["config"]["scenario"] == "recorded"
    assert summary["config"]["rate"] == 200


async def test_the_live_progress_shows_the_phase_and_the_scenarios_counters():
    seen = []

    class Watched(Recorded):
        async def perform(self, state: Log) -> Outcome:
            seen.append(run.progress())
            return await super().perform(state)

    run = LoadRun(LoadConfig(rate=100, duration=0.05), Watched())
    assert run.progress().phase == "starting"
    await run.run()
    assert seen[0].phase == "running"
    assert dict(seen[-1].extra) == {"performed": len(seen) - 1}
    assert run.progress().phase == "done"


async def test_requests_due_while_the_in_flight_bound_is_full_are_dropped_not_delayed():
    release = asyncio.Event()

    class Stuck(Recorded):
        async def perform(self, state: Log) -> Outcome:
            await release.wait()
            return Outcome("read")

    run = LoadRun(LoadConfig(rate=100, duration=0.2, max_in_flight=3), Stuck())
    task = asyncio.create_task(run.run())
    stats = run.stats
    await wait_until(
        lambda: stats.planned and stats.sent + stats.dropped == stats.planned,
        "every planned request was sent or dropped",
    )
    release.set()
    summary = await task
    assert summary["requests"]["planned"] == 20
    assert (summary["requests"]["sent"], summary["requests"]["dropped"]) == (3, 17)
    assert summary["requests"]["ok"] == 3


async def test_a_client_that_stalled_is_inconclusive_and_its_latencies_count_from_the_schedule():
    class Stalling(Recorded):
        async def perform(self, state: Log) -> Outcome:
            state.performed += 1
            if state.performed == 1:
                # The client's own loop stalls: nothing else is sent meanwhile. Blocking
                # the loop is the behaviour under test here, not a wait for something.
                time.sleep(0.2)  # noqa: ASYNC251
            return Outcome("read")

    run = LoadRun(LoadConfig(rate=100, duration=0.1, max_send_lag=0.05), Stalling())
    summary = await run.run()

    assert summary["requests"]["sent"] == 10
    assert summary["client"]["send_lag_max_ms"] >= 100  # request 9 was due at 0.09 s, sent >0.2 s
    assert summary["conclusive"] is False
    assert summary["client"]["fell_behind"] is True
    # Every later request waited behind the stall: counted from its scheduled time.
    assert summary["routes"]["read"]["p50_ms"] >= 100


async def test_an_exception_that_escapes_perform_is_counted_by_type_under_unhandled():
    class Buggy(Recorded):
        async def perform(self, state: Log) -> Outcome:
            state.performed += 1
            if state.performed % 2:
                raise KeyError("items")
            raise TimeoutError

    summary = await LoadRun(LoadConfig(rate=100, duration=0.1), Buggy()).run()
    assert summary["routes"]["unhandled"]["errors"] == {"KeyError": 5, "timeout": 5}


async def test_stop_ends_the_sending_early_and_the_summary_says_so():
    class Stopper(Recorded):
        async def perform(self, state: Log) -> Outcome:
            state.performed += 1
            if state.performed == 5:
                run.stop()
            return Outcome("read")

    run = LoadRun(LoadConfig(rate=200, duration=30), Stopper())
    summary = await run.run()
    assert summary["requests"]["stopped_early"] is True
    assert 5 <= summary["requests"]["sent"] < summary["requests"]["planned"] == 6000
    assert summary["requests"]["completed"] == summary["requests"]["sent"]


async def test_a_session_that_cannot_start_sends_nothing_and_says_why():
    class Unreachable(Recorded):
        @asynccontextmanager
        async def session(self, run: RunContext):
            raise LoadgenError("cannot reach the service")
            yield self.log

    run = LoadRun(LoadConfig(rate=100, duration=1), Unreachable())
    with pytest.raises(LoadgenError, match="cannot reach"):
        await run.run()
    assert run.stats.sent == 0


@pytest.mark.parametrize(
    ("field_name", "value", "message"),
    [
        ("rate", 0, "--rate must be a positive number"),
        ("duration", float("nan"), "--duration must be a positive number"),
        ("timeout", -1, "--timeout must be a positive number"),
        ("max_send_lag", 0, "--max-send-lag must be a positive number"),
        ("max_in_flight", 0, "--max-in-flight must be at least 1"),
    ],
)
def test_engine_settings_out_of_range_are_refused_by_option_name(field_name, value, message):
    with pytest.raises(ValueError, match=message):
        LoadConfig(**{field_name: value})

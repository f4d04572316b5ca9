"""The supervisor's state machine, driven by posted events against fake processes and a
manual clock: no process is started and nothing sleeps."""

import asyncio
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from cellwork.discovery.instance import InstanceInfo, InstanceStatus
from cellwork.resilience import backoff_ceiling
from cellwork.runtime.cellfile import CellSpec
from cellwork.runtime.events import (
    Exited,
    HealthChecked,
    KillRequested,
    NatsExited,
    NatsReady,
    NatsRestartRequested,
    PauseRequested,
    ProbeResult,
    RegistryChanged,
    RequestRefused,
    Scaled,
    ScaleRequested,
    SignalReceived,
    SupervisorEvent,
    Tick,
)
from cellwork.runtime.nats_keeper import NatsKeeper
from cellwork.runtime.processes import InstanceLauncher
from cellwork.runtime.slots import Slot, SlotState
from cellwork.runtime.supervisor_core import Deregister, ScaleRefused, SupervisorCore
from tests.fakes import FakeNats, FakeProcess, FakeProcesses, ManualClock

SUPERVISOR = {
    "hang_timeout": 2.0,
    "startup_timeout": 20.0,
    "restart_backoff_base": 0.5,
    "restart_backoff_max": 4.0,
    "stable_after": 10.0,
    "stop_grace": 3.0,
}


def cell_spec(replicas: int = 2, **supervisor: float) -> CellSpec:
    return CellSpec.model_validate(
        {
            "name": "t",
            "supervisor": {**SUPERVISOR, **supervisor},
            "services": {"echo": {"module": "cellwork.testing.echo", "replicas": replicas}},
        }
    )


class Cell:
    """One core with everything it touches outside replaced, and shortcuts to drive it."""

    def __init__(
        self,
        spec: CellSpec,
        *,
        draw: float = 0.5,
        processes: FakeProcesses | None = None,
        environ: dict[str, str] | None = None,
        deregister: Deregister | None = None,
        nats: FakeNats | None = None,
    ) -> None:
        self.time = ManualClock()
        self.nats = nats
        self.processes = processes or FakeProcesses()
        self.draws = [draw]
        self.deregistered: list[tuple[str, str]] = []
        self.forgotten: list[str] = []
        self.posted: list[SupervisorEvent] = []
        self.posted_changed = asyncio.Event()
        launcher = InstanceLauncher(
            self.processes, environ or {}, "nats://127.0.0.1:4222", Path("/state"), "z1"
        )
        keeper = None
        if nats is not None:
            clock = self.time.clock()
            keeper = NatsKeeper(
                nats,
                post=self._post,
                monotonic=clock.monotonic,
                wall=clock.wall,
                rng=lambda: self.draws[-1],
            )
        self.core = SupervisorCore(
            spec,
            launcher,
            deregister=deregister or self._deregister,
            forget_health=self._forget,
            post=self._post,
            nats=keeper,
            clock=self.time.clock(),
            rng=lambda: self.draws[-1],
        )

    async def _deregister(self, service: str, instance_id: str) -> None:
        self.deregistered.append((service, instance_id))

    async def _forget(self, address: str) -> None:
        self.forgotten.append(address)

    def _post(self, event: SupervisorEvent) -> None:
        self.posted.append(event)
        self.posted_changed.set()

    def slot(self, instance_id: str) -> Slot:
        return next(s for s in self.core.slots if s.instance_id == instance_id)

    def process(self, instance_id: str) -> FakeProcess:
        return self.processes.of(instance_id)[-1]

    async def tick(self, after: float = 0.0) -> bool:
        self.time.advance(after)
        return await self.core.handle(Tick())

    async def restart_due(self, instance_id: str) -> bool:
        """Move the clock to the end of ``instance_id``'s back-off and tick."""
        self.time.now = max(self.time.now, self.slot(instance_id).next_start_at)
        return await self.core.handle(Tick())

    async def healthy(self, instance_id: str, result: ProbeResult = ProbeResult.SERVING) -> None:
        slot = self.slot(instance_id)
        assert slot.process is not None
        await self.core.handle(HealthChecked(slot, slot.process, result))

    async def exits(self, instance_id: str, code: int | None = None) -> None:
        """The current process of ``instance_id`` exits (if it has not already)."""
        process = self.process(instance_id)
        if process.returncode is None:
            process.exit(1 if code is None else code)
        await self.core.handle(Exited(self.slot(instance_id), process, process.returncode))

    async def scale(self, service: str, replicas: int) -> Scaled:
        reply: asyncio.Future[Scaled] = asyncio.get_running_loop().create_future()
        await self.core.handle(ScaleRequested(service, replicas, reply))
        return await reply

    def state(self, instance_id: str) -> SlotState:
        return self.slot(instance_id).state


@pytest.fixture
async def cell():
    cells: list[Cell] = []

    async def start(spec: CellSpec | None = None, **kw) -> Cell:
        made = Cell(spec or cell_spec(), **kw)
        cells.append(made)
        if made.nats is not None:  # the shell starts NATS before the core watches it
            await made.nats.launch()
        await made.core.start()
        return made

    yield start
    for made in cells:
        for launch in made.processes.launched:  # a fake that ignores SIGKILL
            if launch.process.returncode is None:
                launch.process.exit(-signal.SIGKILL)
        await made.core.close()


async def test_every_replica_starts_with_its_slot_id_and_a_log_file(cell):
    c = await cell()
    assert [s["id"] for s in c.core.status()] == ["echo-0", "echo-1"]
    assert [s["status"] for s in c.core.status()] == ["STARTING", "STARTING"]
    assert [launch.module for launch in c.processes.launched] == ["cellwork.testing.echo"] * 2
    assert c.processes.launched[1].log_path == Path("/state/logs/echo-1.log")


async def test_a_crashed_instance_waits_out_its_backoff_then_is_restarted(cell):
    c = await cell(draw=0.5)
    first = c.process("echo-0")
    await c.exits("echo-0", 3)
    assert c.state("echo-0") is SlotState.BACKOFF
    assert c.slot("echo-0").restarts == 1
    # Full jitter: half of the first ceiling (the base, 0.5 s) with a draw of 0.5.
    await c.tick(0.24)
    assert len(c.processes.of("echo-0")) == 1
    await c.tick(0.02)
    assert len(c.processes.of("echo-0")) == 2
    assert c.process("echo-0") is not first
    assert c.state("echo-0") is SlotState.STARTING
    assert c.slot("echo-0").pid == c.process("echo-0").pid


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 0.999), min_size=1, max_size=8))
def test_each_restart_delay_is_drawn_inside_the_backoff_ceiling(draws):
    async def crash_repeatedly() -> None:
        c = Cell(cell_spec(replicas=1))
        await c.core.start()
        try:
            for failures, draw in enumerate(draws, start=1):
                c.draws.append(draw)
                await c.exits("echo-0")
                delay = c.slot("echo-0").next_start_at - c.time.now
                ceiling = backoff_ceiling(failures, base=0.5, cap=4.0)
                assert 0.0 <= delay <= ceiling <= 4.0
                assert delay == pytest.approx(draw * ceiling)
                await c.restart_due("echo-0")
                assert c.state("echo-0") is SlotState.STARTING
        finally:
            await c.core.close()

    asyncio.run(crash_repeatedly())


async def test_an_instance_that_stops_answering_for_the_hang_timeout_is_killed_and_replaced(cell):
    c = await cell(draw=0.0)
    await c.healthy("echo-0")
    assert c.state("echo-0") is SlotState.SERVING
    await c.tick(1.9)
    assert c.process("echo-0").signals == []
    await c.healthy("echo-0", ProbeResult.NO_ANSWER)
    assert c.state("echo-0") is SlotState.NOT_SERVING
    await c.tick(0.2)
    hung = c.process("echo-0")
    assert hung.signals == [signal.SIGKILL]
    assert c.process("echo-1").signals == []  # never healthy, but within startup_timeout
    await c.exits("echo-0")
    await c.tick()
    assert hung is not c.process("echo-0")
    assert c.state("echo-0") is SlotState.STARTING and c.slot("echo-0").restarts == 1


async def test_an_instance_that_never_reaches_serving_is_killed_after_the_startup_timeout(cell):
    c = await cell()
    await c.tick(19.9)
    assert c.process("echo-0").signals == []
    await c.tick(0.2)
    assert c.process("echo-0").signals == [signal.SIGKILL]
    assert c.process("echo-1").signals == [signal.SIGKILL]


async def test_serving_for_stable_after_resets_the_failure_count(cell):
    c = await cell(cell_spec(replicas=1), draw=0.999)
    for _ in range(3):
        await c.exits("echo-0")
        await c.restart_due("echo-0")
    assert c.slot("echo-0").consecutive_failures == 3
    await c.healthy("echo-0")
    await c.tick(1.0)
    await c.healthy("echo-0")
    await c.tick(1.0)
    assert c.slot("echo-0").consecutive_failures == 3  # serving, but not for long
    for _ in range(9):
        await c.healthy("echo-0")
        await c.tick(1.0)
    assert c.slot("echo-0").consecutive_failures == 0
    await c.exits("echo-0")
    # Back to the first ceiling (the base), not the fourth.
    assert c.slot("echo-0").next_start_at - c.time.now <= 0.5
    assert c.slot("echo-0").restarts == 4


async def test_scaling_down_drains_the_extra_instance_and_drops_its_slot_once_it_exits(cell):
    c = await cell()
    assert await c.scale("echo", 1) == Scaled("echo", 2, 1)
    assert c.process("echo-1").signals == [signal.SIGTERM]
    assert c.state("echo-1") is SlotState.DRAINING
    assert c.process("echo-0").signals == []
    await c.exits("echo-1", 0)
    assert [s["id"] for s in c.core.status()] == ["echo-0"]
    await c.tick(60.0)  # and it is not restarted
    assert len(c.processes.of("echo-1")) == 1


async def test_an_instance_that_ignores_sigterm_after_scale_down_is_killed_after_stop_grace(cell):
    c = await cell()
    await c.scale("echo", 1)
    await c.tick(2.9)
    assert c.process("echo-1").signals == [signal.SIGTERM]
    await c.tick(0.2)
    assert c.process("echo-1").signals == [signal.SIGTERM, signal.SIGKILL]


async def test_scaling_up_again_while_an_instance_drains_replaces_it_without_a_restart(cell):
    c = await cell(draw=0.9)  # a back-off, were it counted as a crash, would be visible
    await c.scale("echo", 1)
    draining = c.process("echo-1")
    assert await c.scale("echo", 2) == Scaled("echo", 1, 2)
    assert len(c.core.slots) == 2  # the same slot, not a second echo-1
    await c.tick()
    assert draining.signals == [signal.SIGTERM, signal.SIGKILL]
    await c.exits("echo-1")
    assert c.process("echo-1") is not draining  # started again at once, no back-off
    assert c.state("echo-1") is SlotState.STARTING
    assert c.slot("echo-1").restarts == 0 and c.slot("echo-1").consecutive_failures == 0
    assert [s["id"] for s in c.core.status()] == ["echo-0", "echo-1"]


async def test_a_crash_still_queued_when_a_scale_down_arrives_is_handled_once(cell):
    c = await cell()
    crashed = c.process("echo-1")
    crashed.exit(1)  # dead, but its Exited event waits behind the scale request
    assert await c.scale("echo", 1) == Scaled("echo", 2, 1)
    assert [s["id"] for s in c.core.status()] == ["echo-0", "echo-1"]  # kept until its exit
    await c.core.handle(Exited(c.slot("echo-1"), crashed, 1))
    assert [s["id"] for s in c.core.status()] == ["echo-0"]
    assert c.deregistered == [("echo", "echo-1")]
    assert await c.scale("echo", 2) == Scaled("echo", 1, 2)  # and up again: a fresh echo-1
    assert c.process("echo-1") is not crashed


async def test_scaling_up_starts_new_slots_and_leaves_running_ones_alone(cell):
    c = await cell()
    before = [c.process("echo-0"), c.process("echo-1")]
    assert await c.scale("echo", 3) == Scaled("echo", 2, 3)
    assert [s["id"] for s in c.core.status()] == ["echo-0", "echo-1", "echo-2"]
    assert [c.process("echo-0"), c.process("echo-1")] == before
    assert all(p.signals == [] for p in before)


@pytest.mark.parametrize(
    ("service", "replicas", "reason"),
    [
        ("nope", 1, "unknown service 'nope'"),
        ("echo", -1, "between 0 and 64"),
        ("echo", 65, "between 0 and 64"),
    ],
)
async def test_a_scale_request_for_an_unknown_service_or_out_of_range_is_refused(
    cell, service, replicas, reason
):
    c = await cell()
    with pytest.raises(ScaleRefused, match=reason):
        await c.scale(service, replicas)
    assert len(c.core.slots) == 2 and c.core.desired == {"echo": 2}


async def test_a_scale_request_while_draining_is_refused(cell):
    c = await cell()
    await c.core.handle(SignalReceived(signal.SIGTERM))
    with pytest.raises(ScaleRefused, match="draining"):
        await c.scale("echo", 3)


async def test_a_scale_reply_nobody_waits_for_any_more_is_dropped(cell):
    c = await cell()
    reply: asyncio.Future[Scaled] = asyncio.get_running_loop().create_future()
    reply.cancel()
    await c.core.handle(ScaleRequested("echo", 3, reply))
    assert len(c.core.slots) == 3


async def test_the_first_signal_drains_every_instance_and_kills_after_stop_grace(cell):
    c = await cell(processes=FakeProcesses(dies_on=()))  # each exits when the test says
    await c.core.handle(SignalReceived(signal.SIGINT))
    assert [c.process(i).signals for i in ("echo-0", "echo-1")] == [[signal.SIGTERM]] * 2
    assert {c.state("echo-0"), c.state("echo-1")} == {SlotState.DRAINING}
    await c.exits("echo-0", 0)  # drained in time
    assert c.state("echo-0") is SlotState.STOPPED
    assert await c.tick(2.9) is False
    assert c.process("echo-1").signals == [signal.SIGTERM]
    assert await c.tick(0.2) is False  # killed now; its exit is still to come
    assert c.process("echo-1").signals == [signal.SIGTERM, signal.SIGKILL]
    await c.exits("echo-1", -signal.SIGKILL)
    assert await c.tick() is True
    assert len(c.processes.launched) == 2  # nothing was restarted
    assert [s["status"] for s in c.core.status()] == ["STOPPED", "STOPPED"]


async def test_a_second_signal_kills_every_instance_at_once(cell):
    c = await cell()
    await c.core.handle(SignalReceived(signal.SIGINT))
    await c.core.handle(SignalReceived(signal.SIGINT))
    assert [c.process(i).signals for i in ("echo-0", "echo-1")] == [
        [signal.SIGTERM, signal.SIGKILL]
    ] * 2
    assert await c.tick() is True  # both died of the SIGKILL


async def test_the_loop_goes_on_while_a_draining_instance_is_alive(cell):
    c = await cell(cell_spec(replicas=1))
    await c.core.handle(SignalReceived(signal.SIGTERM))
    assert await c.tick(1.0) is False
    await c.exits("echo-0", 0)
    assert await c.tick() is True


async def test_a_slot_waiting_out_its_backoff_stops_on_drain_without_a_restart(cell):
    c = await cell(cell_spec(replicas=1))
    await c.exits("echo-0")
    await c.core.handle(SignalReceived(signal.SIGTERM))
    assert c.state("echo-0") is SlotState.STOPPED
    assert await c.tick(60.0) is True
    assert len(c.processes.launched) == 1


async def test_an_exited_instance_is_deregistered_and_its_health_channel_closed_at_once(cell):
    c = await cell()
    pid = c.process("echo-0").pid
    record = InstanceInfo("echo", "echo-0", "127.0.0.1", 5001, 5002, pid=pid)
    await c.core.handle(RegistryChanged({record.key: record}))
    await c.exits("echo-0", -9)
    assert c.deregistered == [("echo", "echo-0")]
    assert c.forgotten == ["127.0.0.1:5001"]


async def test_an_exit_is_handled_even_when_the_registry_cannot_be_reached(cell):
    async def unreachable(service: str, instance_id: str) -> None:
        raise TimeoutError("nats: timeout")

    c = await cell(deregister=unreachable)
    await c.exits("echo-0")
    assert c.state("echo-0") is SlotState.BACKOFF


async def test_news_of_an_earlier_start_does_not_touch_the_current_one(cell):
    c = await cell(draw=0.0)
    old = c.process("echo-0")
    old_slot = c.slot("echo-0")
    await c.exits("echo-0")
    await c.tick()
    await c.core.handle(Exited(old_slot, old, 1))  # the same exit, told twice
    await c.core.handle(HealthChecked(old_slot, old, True))
    assert c.state("echo-0") is SlotState.STARTING
    assert c.slot("echo-0").restarts == 1


async def test_the_registry_tells_where_an_instance_listens_and_that_it_drains(cell):
    c = await cell()
    echo0, echo1 = c.process("echo-0"), c.process("echo-1")
    mine = InstanceInfo("echo", "echo-0", "10.0.0.1", 7001, 7002, pid=echo0.pid)
    stale = InstanceInfo("echo", "echo-1", "10.0.0.1", 7003, 7004, pid=echo1.pid + 99)
    await c.core.handle(RegistryChanged({mine.key: mine, stale.key: stale}))
    rows = {r["id"]: r for r in c.core.status()}
    assert (rows["echo-0"]["host"], rows["echo-0"]["grpc_port"]) == ("10.0.0.1", 7001)
    assert rows["echo-1"]["grpc_port"] == 0  # a record of another start
    assert [(s.instance_id, a) for s, _p, a in c.core.health_targets()] == [
        ("echo-0", "10.0.0.1:7001")
    ]
    draining = mine.with_status(InstanceStatus.DRAINING)
    await c.core.handle(RegistryChanged({draining.key: draining}))
    assert c.state("echo-0") is SlotState.DRAINING


async def test_a_finished_process_is_reported_by_its_waiter(cell):
    c = await cell()
    process = c.process("echo-1")
    process.exit(7)
    await asyncio.wait_for(c.posted_changed.wait(), 5)
    assert c.posted == [Exited(c.slot("echo-1"), process, 7)]


async def test_close_kills_what_is_still_alive(cell):
    c = Cell(cell_spec())
    await c.core.start()
    await c.core.close()
    assert all(p.signals == [signal.SIGKILL] for p in (c.process("echo-0"), c.process("echo-1")))


async def test_instances_get_free_ports_whatever_the_supervisors_environment_says(cell):
    environ = {"PATH": "/usr/bin", "CELLWORK_GRPC_PORT": "50051", "CELLWORK_METRICS_PORT": "9090"}
    c = await cell(environ=environ)
    for launch in c.processes.launched:
        assert launch.env["CELLWORK_GRPC_PORT"] == "0"
        assert launch.env["CELLWORK_METRICS_PORT"] == "0"
        assert launch.env["PATH"] == "/usr/bin"


async def test_the_cell_file_may_fix_an_instances_ports_and_the_supervisor_names_it(cell):
    spec = CellSpec.model_validate(
        {
            "name": "t",
            "zone": "z1",
            "env": {"CELLWORK_METRICS_PORT": "9100", "CELLWORK_SERVICE": "ignored"},
            "services": {"echo": {"module": "m", "env": {"CELLWORK_GRPC_PORT": "50052"}}},
        }
    )
    c = await cell(spec, environ={"CELLWORK_GRPC_PORT": "50051"})
    env = c.processes.launched[0].env
    assert (env["CELLWORK_GRPC_PORT"], env["CELLWORK_METRICS_PORT"]) == ("50052", "9100")
    assert env["CELLWORK_SERVICE"] == "echo" and env["CELLWORK_INSTANCE_ID"] == "echo-0"
    assert env["CELLWORK_NATS_URL"] == "nats://127.0.0.1:4222"
    assert (env["CELLWORK_STATE_DIR"], env["CELLWORK_ZONE"]) == ("/state", "z1")


# -- liveness, not readiness ------------------------------------------------------------


async def test_an_instance_that_answers_not_serving_after_serving_is_kept(cell):
    c = await cell(draw=0.0)
    await c.healthy("echo-0")
    for _ in range(10):  # draining or degraded for far longer than hang_timeout
        await c.tick(1.0)
        await c.healthy("echo-0", ProbeResult.NOT_SERVING)
    assert c.state("echo-0") is SlotState.NOT_SERVING
    assert c.process("echo-0").signals == []
    await c.tick(2.1)  # then silence: that is a hang
    assert c.process("echo-0").signals == [signal.SIGKILL]


async def test_answering_not_serving_does_not_count_as_reaching_serving(cell):
    c = await cell(cell_spec(replicas=1))
    for _ in range(21):
        await c.healthy("echo-0", ProbeResult.NOT_SERVING)
        await c.tick(1.0)
    assert c.state("echo-0") is SlotState.STARTING
    assert c.process("echo-0").signals == [signal.SIGKILL]  # the startup rule still holds


# -- a supervisor that never dies of one event -------------------------------------------


async def test_a_start_that_fails_is_a_crash_restarted_after_its_backoff(cell):
    processes = FakeProcesses()
    processes.failing = 1
    with capture_logs() as logs:
        c = await cell(cell_spec(replicas=2), processes=processes, draw=0.5)
    assert c.state("echo-0") is SlotState.BACKOFF and c.slot("echo-0").restarts == 1
    assert c.state("echo-1") is SlotState.STARTING  # the others start regardless
    assert [e["instance"] for e in logs if e["event"] == "supervisor.spawn_failed"] == ["echo-0"]
    await c.tick(0.26)
    assert c.state("echo-0") is SlotState.STARTING
    assert len(c.processes.of("echo-0")) == 1


async def test_a_restart_that_fails_keeps_backing_off_and_the_cell_keeps_running(cell):
    c = await cell(cell_spec(replicas=1), draw=0.999)
    c.processes.failing = 3
    await c.exits("echo-0")
    for failures in (2, 3, 4):
        await c.restart_due("echo-0")
        assert c.state("echo-0") is SlotState.BACKOFF
        assert c.slot("echo-0").consecutive_failures == failures
    await c.restart_due("echo-0")
    assert c.state("echo-0") is SlotState.STARTING
    assert c.slot("echo-0").restarts == 4


class Unkillable(FakeProcess):
    """A process the supervisor may not signal (another user's, by a pid reused)."""

    def send_signal(self, signum: int, /) -> None:
        raise PermissionError(1, "Operation not permitted")


async def test_a_handler_that_raises_is_logged_and_the_loop_goes_on(cell):
    c = await cell(cell_spec(replicas=1))
    slot = c.slot("echo-0")
    slot.process = Unkillable(4242, ())
    with capture_logs() as logs:
        assert await c.tick(30.0) is False  # hung past startup_timeout; the kill fails
        await c.core.handle(SignalReceived(signal.SIGINT))  # the drain's SIGTERM fails too
    failed = [e for e in logs if e["event"] == "supervisor.handler_failed"]
    assert [(e["kind"], e.get("instance")) for e in failed] == [
        ("Tick", "echo-0"),
        ("SignalReceived", None),
    ]
    assert "PermissionError" in failed[0]["error"]
    assert c.core.draining  # the loop went on: the signal was acted on before it raised


async def test_a_request_whose_handler_raises_gets_an_error_answer_not_silence(cell):
    c = await cell()

    async def broken(service: str, replicas: int) -> Scaled:
        raise KeyError(service)

    c.core._scale = broken  # type: ignore[method-assign]
    reply: asyncio.Future[Scaled] = asyncio.get_running_loop().create_future()
    assert await c.core.handle(ScaleRequested("echo", 3, reply)) is False
    with pytest.raises(RuntimeError, match="failed to act on it"):
        await reply


# -- NATS kept like an instance ----------------------------------------------------------


async def test_nats_that_exits_is_started_again_after_a_short_backoff(cell):
    nats = FakeNats()
    c = await cell(nats=nats, draw=0.5)
    first = nats.launched[0]
    with capture_logs() as logs:
        first.exit(-signal.SIGKILL)
        await c.core.handle(NatsExited(first, -signal.SIGKILL))
        assert c.core.nats is not None and c.core.nats.status()["state"] == "down"
        await c.tick(0.09)  # full jitter: half of the 0.2 s ceiling
        assert len(nats.launched) == 1
        await c.tick(0.02)
        assert len(nats.launched) == 2 and c.core.nats.status()["state"] == "starting"
        await c.core.handle(NatsReady(nats.launched[1], True))
    status = c.core.nats.status()
    assert (status["state"], status["pid"], status["restarts"]) == ("up", 9001, 1)
    assert [e["event"] for e in logs if e["event"].startswith("supervisor.nats")] == [
        "supervisor.nats_exited",
        "supervisor.nats_restarted",
    ]


async def test_nats_that_does_not_accept_connections_in_time_is_killed_and_tried_again(cell):
    nats = FakeNats()
    c = await cell(nats=nats, draw=0.0)
    nats.launched[0].exit(1)
    await c.core.handle(NatsExited(nats.launched[0], 1))
    await c.tick()
    stuck = nats.launched[1]
    await c.core.handle(NatsReady(stuck, False))
    assert stuck.signals == [signal.SIGKILL]
    await c.core.handle(NatsExited(stuck, -signal.SIGKILL))
    await c.tick()
    assert len(nats.launched) == 3 and c.core.nats is not None
    assert c.core.nats.restarts == 2


async def test_a_nats_server_that_cannot_be_launched_is_tried_again_later(cell):
    nats = FakeNats()
    c = await cell(nats=nats, draw=0.0)
    nats.launched[0].exit(1)
    await c.core.handle(NatsExited(nats.launched[0], 1))
    nats.failing = 1
    await c.tick()
    assert len(nats.launched) == 1 and c.core.nats is not None
    assert c.core.nats.status()["state"] == "down"
    await c.tick(5.0)
    assert len(nats.launched) == 2


async def test_starting_instances_are_not_killed_for_their_startup_timeout_while_nats_is_down(
    cell,
):
    nats = FakeNats()
    c = await cell(cell_spec(replicas=1), nats=nats, draw=0.0)
    await c.tick(10.0)
    down = nats.launched[0]
    down.exit(-signal.SIGKILL)
    await c.core.handle(NatsExited(down, -signal.SIGKILL))
    nats.failing = 100  # it stays down a long while
    for _ in range(60):
        await c.tick(1.0)
    assert c.process("echo-0").signals == []  # 70 s after its start, far past 20 s
    nats.failing = 0
    await c.tick(5.0)
    await c.core.handle(NatsReady(nats.launched[-1], True))
    await c.tick(19.0)  # its startup clock starts over when NATS is back
    assert c.process("echo-0").signals == []
    await c.tick(1.5)
    assert c.process("echo-0").signals == [signal.SIGKILL]


async def test_a_serving_instance_still_hangs_by_its_silence_while_nats_is_down(cell):
    nats = FakeNats()
    c = await cell(cell_spec(replicas=1), nats=nats)
    await c.healthy("echo-0")
    nats.launched[0].exit(1)
    await c.core.handle(NatsExited(nats.launched[0], 1))
    await c.tick(2.1)
    assert c.process("echo-0").signals == [signal.SIGKILL]


async def test_an_exit_while_nats_is_down_does_not_wait_on_the_registry(cell):
    nats = FakeNats()
    c = await cell(nats=nats)
    nats.launched[0].exit(1)
    await c.core.handle(NatsExited(nats.launched[0], 1))
    await c.exits("echo-0")
    assert c.deregistered == [] and c.state("echo-0") is SlotState.BACKOFF


async def test_close_stops_watching_nats(cell):
    nats = FakeNats()
    c = Cell(cell_spec(), nats=nats)
    await nats.launch()
    await c.core.start()
    await c.core.close()
    nats.launched[0].exit(1)
    await asyncio.sleep(0)
    assert not any(isinstance(e, NatsExited) for e in c.posted)


# -- chaos -------------------------------------------------------------------------------


async def ask(c: Cell, event_type, *args):
    reply: asyncio.Future = asyncio.get_running_loop().create_future()
    await c.core.handle(event_type(*args, reply))
    return await reply


async def test_chaos_kill_sigkills_one_instance_and_the_cell_heals_it_as_a_crash(cell):
    c = await cell(draw=0.0)
    victim = c.process("echo-1")
    done = await ask(c, KillRequested, "echo", "echo-1")
    assert done == {"service": "echo", "instance": "echo-1", "pid": victim.pid}
    assert victim.signals == [signal.SIGKILL]
    await c.exits("echo-1")
    await c.tick()
    assert c.process("echo-1") is not victim and c.slot("echo-1").restarts == 1
    first = await ask(c, KillRequested, "echo", None)  # no instance named: the first running
    assert first["instance"] == "echo-0"


@pytest.mark.parametrize(
    ("service", "instance", "reason"),
    [
        ("nope", None, "unknown service 'nope'"),
        ("echo", "echo-7", "echo has no instance 'echo-7' \\(it has echo-0, echo-1\\)"),
    ],
)
async def test_chaos_on_a_bad_target_is_refused_with_the_reason(cell, service, instance, reason):
    c = await cell()
    with pytest.raises(RequestRefused, match=reason):
        await ask(c, KillRequested, service, instance)
    with pytest.raises(RequestRefused, match=reason):
        await ask(c, PauseRequested, service, instance, 5.0)
    assert all(c.process(i).signals == [] for i in ("echo-0", "echo-1"))


async def test_chaos_kill_of_an_instance_waiting_out_its_backoff_is_refused(cell):
    c = await cell()
    await c.exits("echo-0")
    with pytest.raises(RequestRefused, match="no running instance of echo-0"):
        await ask(c, KillRequested, "echo", "echo-0")


async def test_chaos_pause_stops_an_instance_and_the_supervisor_resumes_it_after_the_time(cell):
    c = await cell(processes=FakeProcesses(dies_on=()))
    await c.healthy("echo-0")
    done = await ask(c, PauseRequested, "echo", None, 1.5)
    assert done["instance"] == "echo-0" and done["seconds"] == 1.5
    assert c.process("echo-0").signals == [signal.SIGSTOP]
    await c.tick(1.4)
    assert c.process("echo-0").signals == [signal.SIGSTOP]
    await c.tick(0.2)
    assert c.process("echo-0").signals == [signal.SIGSTOP, signal.SIGCONT]
    await c.healthy("echo-0")
    await c.tick(1.0)
    assert c.process("echo-0").signals == [signal.SIGSTOP, signal.SIGCONT]


async def test_a_paused_instance_that_stays_silent_is_replaced_by_the_hang_detection(cell):
    c = await cell(draw=0.0)
    await c.healthy("echo-0")
    paused = c.process("echo-0")
    await ask(c, PauseRequested, "echo", "echo-0", 60.0)
    await c.tick(2.1)
    assert paused.signals == [signal.SIGSTOP, signal.SIGKILL]
    await c.exits("echo-0")
    await c.tick(60.0)  # the successor starts; the old pause's SIGCONT is forgotten
    await c.tick(1.0)
    assert paused.signals == [signal.SIGSTOP, signal.SIGKILL]
    assert c.process("echo-0") is not paused and c.process("echo-0").signals == []


async def test_a_paused_instance_is_resumed_to_drain_when_the_cell_stops(cell):
    c = await cell(cell_spec(replicas=1), processes=FakeProcesses(dies_on=()))
    await ask(c, PauseRequested, "echo", None, 60.0)
    await c.core.handle(SignalReceived(signal.SIGINT))
    assert c.process("echo-0").signals == [signal.SIGSTOP, signal.SIGTERM, signal.SIGCONT]


@pytest.mark.parametrize("seconds", [0.0, -1.0, 3601.0])
async def test_a_pause_out_of_range_is_refused(cell, seconds):
    c = await cell()
    with pytest.raises(RequestRefused, match="--for"):
        await ask(c, PauseRequested, "echo", None, seconds)


async def test_chaos_nats_restart_kills_nats_and_holds_it_down_for_the_time_asked(cell):
    nats = FakeNats()
    c = await cell(nats=nats, draw=0.0)
    server = nats.launched[0]
    done = await ask(c, NatsRestartRequested, 3.0)
    assert done == {"pid": server.pid, "url": nats.url, "down": 3.0}
    assert server.signals == [signal.SIGKILL]
    await c.core.handle(NatsExited(server, -signal.SIGKILL))
    await c.tick(2.9)
    assert len(nats.launched) == 1
    await c.tick(0.2)
    assert len(nats.launched) == 2


async def test_chaos_nats_restart_is_refused_for_an_external_nats_or_one_already_down(cell):
    c = await cell()
    with pytest.raises(RequestRefused, match="external NATS"):
        await ask(c, NatsRestartRequested, 0.0)
    nats = FakeNats()
    d = await cell(nats=nats)
    nats.launched[0].exit(1)
    await d.core.handle(NatsExited(nats.launched[0], 1))
    with pytest.raises(RequestRefused, match="is down, not running"):
        await ask(d, NatsRestartRequested, 0.0)

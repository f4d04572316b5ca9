"""Rolling restarts, driven through the supervisor's core with fake processes: each
instance is replaced only once its successor serves, one at a time."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from cellwork.runtime.events import (
    RequestRefused,
    RestartRequested,
    Scaled,
    ScaleRequested,
    SignalReceived,
)
from cellwork.runtime.rollout import Rollout, RolloutState
from cellwork.runtime.slots import Slot, SlotState
from tests.unit.cellwork.runtime.test_supervisor_core import Cell, cell, cell_spec

__all__ = ["cell"]  # the fixture, used by name


async def restart(c: Cell, service: str = "echo") -> dict[str, Any]:
    reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    await c.core.handle(RestartRequested(service, reply))
    return await reply


def ids(c: Cell) -> list[str]:
    return [row["id"] for row in c.core.status()]


def latest(c: Cell) -> dict[str, Any]:
    (rollout,) = c.core.rollouts.status()
    return rollout


async def serving_cell(cell: Any, replicas: int = 2) -> Cell:
    c: Cell = await cell(cell_spec(replicas=replicas))  # its processes ignore SIGTERM
    for index in range(replicas):
        await c.healthy(f"echo-{index}")
    return c


async def test_each_instance_is_drained_only_after_its_successor_serves_one_at_a_time(cell):
    c = await serving_cell(cell)
    begun = await restart(c)
    assert begun["state"] == "running" and begun["steps"] == ["started echo-0-g1 to replace echo-0"]
    assert ids(c) == ["echo-0", "echo-0-g1", "echo-1"]
    assert c.process("echo-0").signals == []  # nothing drains before its successor serves

    await c.tick(1.0)
    assert c.process("echo-0").signals == [] and len(c.processes.launched) == 3
    await c.healthy("echo-0-g1")
    assert c.process("echo-0").signals == [signal.SIGTERM]
    assert c.state("echo-0") is SlotState.DRAINING
    assert c.process("echo-1").signals == []  # the next waits until the old one is gone
    assert len(c.processes.launched) == 3

    await c.exits("echo-0")
    assert ids(c) == ["echo-0-g1", "echo-1", "echo-1-g1"]
    await c.healthy("echo-1-g1")
    assert c.process("echo-1").signals == [signal.SIGTERM]
    await c.exits("echo-1")

    assert ids(c) == ["echo-0-g1", "echo-1-g1"]
    assert latest(c)["state"] == "done"
    assert latest(c)["steps"] == [
        "started echo-0-g1 to replace echo-0",
        "echo-0-g1 is SERVING; draining echo-0",
        "echo-0 stopped",
        "started echo-1-g1 to replace echo-1",
        "echo-1-g1 is SERVING; draining echo-1",
        "echo-1 stopped",
        "done: 2 instances of echo replaced",
    ]
    assert c.core.desired["echo"] == 2
    assert {s.restarts for s in c.core.slots} == {0}
    # A second rolling restart goes on to the next generation.
    assert (await restart(c))["steps"] == ["started echo-0-g2 to replace echo-0-g1"]


async def test_a_successor_that_exits_before_serving_fails_the_rollout_and_the_old_one_stays(
    cell,
):
    c = await serving_cell(cell)
    await restart(c)
    await c.exits("echo-0-g1", 3)
    assert latest(c)["state"] == "failed"
    assert "echo-0-g1 exited before it served" in latest(c)["reason"]
    assert "echo-0 keeps serving" in latest(c)["reason"]
    assert ids(c) == ["echo-0", "echo-1"]  # the successor's slot is gone, not restarted
    await c.tick(1.0)
    assert len(c.processes.launched) == 3
    assert c.process("echo-0").signals == c.process("echo-1").signals == []


async def test_a_successor_killed_for_not_starting_in_time_fails_the_rollout(cell):
    c = await serving_cell(cell)
    await restart(c)
    for _ in range(21):
        await c.healthy("echo-0")
        await c.healthy("echo-1")
        await c.tick(1.0)  # past startup_timeout (20 s) at last: SIGKILL
    assert c.process("echo-0-g1").signals == [signal.SIGKILL]
    await c.exits("echo-0-g1")
    assert latest(c)["state"] == "failed"
    assert ids(c) == ["echo-0", "echo-1"]


async def test_restart_requests_are_refused_with_the_reason(cell):
    c = await serving_cell(cell)
    with pytest.raises(RequestRefused, match="unknown service 'nope'"):
        await restart(c, "nope")
    await restart(c)
    with pytest.raises(RequestRefused, match="already under way"):
        await restart(c)
    reply: asyncio.Future[Scaled] = asyncio.get_running_loop().create_future()
    await c.core.handle(ScaleRequested("echo", 3, reply))
    with pytest.raises(RequestRefused, match="rolling restart of echo is under way"):
        await reply


async def test_a_cell_that_drains_ends_the_rollout_and_stops_every_generation(cell):
    c = await serving_cell(cell)
    await restart(c)
    await c.core.handle(SignalReceived(signal.SIGTERM))
    assert latest(c)["state"] == "failed" and latest(c)["reason"] == "the cell is draining"
    for instance in ("echo-0", "echo-0-g1", "echo-1"):
        assert c.process(instance).signals == [signal.SIGTERM]
    with pytest.raises(RequestRefused, match="draining"):
        await restart(c)


async def test_a_service_of_no_instances_is_restarted_at_once():
    rollout = Rollout(1, "idle", [])
    await rollout.advance(NoActions(), draining=False)
    assert rollout.state is RolloutState.DONE
    assert rollout.steps == ["done: 0 instances of idle replaced"]


class NoActions:
    async def start_successor(self, old: Slot) -> Slot:
        raise AssertionError("nothing to replace")

    def retire(self, slot: Slot) -> None:
        raise AssertionError("nothing to retire")

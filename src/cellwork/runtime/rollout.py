"""A rolling restart (``cellwork restart SERVICE --rolling``): replace a service's
instances one at a time, never leaving it with fewer serving than it had.

For each instance, in slot order: start its successor (the same slot position, the
next generation: ``feed-0`` is followed by ``feed-0-g1``, a new id, so the two never
share a registry record), wait until the successor answers SERVING (the supervisor
probes it at the address it registered, so it is in the registry for callers too),
then retire the old one: SIGTERM, and its drain publishes DRAINING, lets callers
notice, finishes in-flight calls and deregisters before it stops; wait until it has
exited, then go on to the next.

It fails, and leaves the old instance serving, when a successor exits (or is killed
for not starting in time) before it served; it stops when the cell drains. The
supervisor's core calls ``advance`` after every event; the rollout decides from the
slots' state only, so a test drives it with plain slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from cellwork.observability.logging import get_logger
from cellwork.runtime.events import RequestRefused
from cellwork.runtime.slots import Slot

_log = get_logger("cellwork.supervisor")


class RolloutState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class RolloutActions(Protocol):
    """What a rollout asks of the supervisor."""

    async def start_successor(self, old: Slot) -> Slot:
        """Start the next generation of ``old``'s slot beside it; returns the new slot."""
        ...

    def retire(self, slot: Slot) -> None:
        """Drain and stop ``slot`` for good (its slot goes once its process has exited)."""


@dataclass(eq=False)
class Rollout:
    """One rolling restart of ``service``: the slots still ``waiting``, the pair being
    swapped (``old``, ``new``), and ``steps``, what it did so far, for the asker."""

    number: int
    service: str
    waiting: list[Slot]
    old: Slot | None = None
    new: Slot | None = None
    state: RolloutState = RolloutState.RUNNING
    reason: str = ""
    steps: list[str] = field(default_factory=list)
    replaced: int = 0

    @property
    def running(self) -> bool:
        return self.state is RolloutState.RUNNING

    async def advance(self, actions: RolloutActions, *, draining: bool) -> None:
        """Take every step the slots' state allows now."""
        while self.running:
            if draining:
                self.fail("the cell is draining")
                return
            old, new = self.old, self.new
            if old is None or new is None:
                if not self.waiting:
                    self.state = RolloutState.DONE
                    self.steps.append(f"done: {self.replaced} instances of {self.service} replaced")
                    return
                old = self.old = self.waiting.pop(0)
                new = self.new = await actions.start_successor(old)
                self.steps.append(f"started {new.instance_id} to replace {old.instance_id}")
                continue
            if new.serving_since is None:
                if new.restarts:  # it exited (or failed to start, or was killed as hung)
                    actions.retire(new)
                    self.fail(
                        f"{new.instance_id} exited before it served (see its log, "
                        f"logs/{new.instance_id}.log); {old.instance_id} keeps serving"
                    )
                return  # still starting
            if not old.stopping:
                self.steps.append(f"{new.instance_id} is SERVING; draining {old.instance_id}")
                actions.retire(old)
            if old.alive:
                return  # draining
            self.steps.append(f"{old.instance_id} stopped")
            self.replaced += 1
            self.old = self.new = None

    def fail(self, reason: str) -> None:
        """End the rollout as failed, for ``reason``."""
        self.state, self.reason = RolloutState.FAILED, reason
        self.steps.append(f"failed: {reason}")

    def describe(self) -> dict[str, Any]:
        """The rollout as ``cellwork status --json`` prints it under ``rollouts``."""
        return {
            "number": self.number,
            "service": self.service,
            "state": self.state.value,
            "reason": self.reason,
            "steps": list(self.steps),
        }


class Rollouts:
    """The latest rolling restart of each service of a cell (one at a time per service)."""

    def __init__(self) -> None:
        self.latest: dict[str, Rollout] = {}
        self._count = 0

    def running(self, service: str) -> bool:
        """Whether a rolling restart of ``service`` is under way."""
        rollout = self.latest.get(service)
        return rollout is not None and rollout.running

    def status(self) -> list[dict[str, Any]]:
        """Each service's latest rollout, as ``cellwork status --json`` prints them."""
        return [rollout.describe() for rollout in self.latest.values()]

    async def begin(
        self, service: str, slots: list[Slot], actions: RolloutActions
    ) -> dict[str, Any]:
        """Start replacing ``slots`` of ``service``, in order; returns the rollout begun.
        Raises RequestRefused while one of that service is under way."""
        if self.running(service):
            raise RequestRefused(f"a rolling restart of {service} is already under way")
        self._count += 1
        rollout = self.latest[service] = Rollout(self._count, service, list(slots))
        _log.info(
            "supervisor.rollout_started",
            service=service,
            number=rollout.number,
            instances=[slot.instance_id for slot in slots],
        )
        await self._advance(rollout, actions, draining=False)
        return rollout.describe()

    async def advance(self, actions: RolloutActions, *, draining: bool) -> None:
        """Take every step each running rollout can take now (after every event)."""
        for rollout in list(self.latest.values()):
            if rollout.running:
                await self._advance(rollout, actions, draining=draining)

    async def _advance(self, rollout: Rollout, actions: RolloutActions, *, draining: bool) -> None:
        try:
            await rollout.advance(actions, draining=draining)
        except Exception as exc:  # a bug: the asker hears of it, the cell goes on
            _log.exception("supervisor.rollout_failed", service=rollout.service, error=repr(exc))
            rollout.fail(f"the supervisor failed to go on: {exc!r}")
        if not rollout.running:
            _log.info(
                "supervisor.rollout_ended",
                service=rollout.service,
                number=rollout.number,
                state=rollout.state.value,
                reason=rollout.reason,
            )

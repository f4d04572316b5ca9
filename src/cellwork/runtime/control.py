"""The cell's control channel: ``status`` and ``scale`` as NATS request/reply.

The running supervisor answers on ``_CELLWORK.<cell>.<verb>``; the CLI finds
the cell's NATS URL in ``<state dir>/cell.json``, written at start-up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from cellwork.errors import InvalidArgument, Unavailable

STATE_FILE = "cell.json"


def control_subject(cell: str, verb: str) -> str:
    """Subject the supervisor of ``cell`` answers ``verb`` on."""
    return f"_CELLWORK.{cell}.{verb}"


@dataclass(frozen=True, slots=True)
class CellState:
    """What a running cell publishes about itself in its state directory."""

    name: str
    nats_url: str
    supervisor_pid: int
    state_dir: str
    nats_monitor_url: str = ""  # the embedded nats-server's monitoring port (/varz, /jsz)

    def write(self, state_dir: Path) -> None:
        (state_dir / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, state_dir: Path) -> CellState:
        """Read the state file; raises Unavailable when no cell runs there."""
        path = state_dir / STATE_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise Unavailable(f"no running cell: {path} does not exist") from None
        except (ValueError, TypeError) as exc:
            raise Unavailable(f"unreadable cell state {path}: {exc}") from None


async def request(state: CellState, verb: str, payload: dict[str, Any], timeout: float) -> Any:
    """Send one control request; raises Unavailable or InvalidArgument with the reason."""
    try:
        nc = await nats.connect(state.nats_url, connect_timeout=2, max_reconnect_attempts=0)
    except Exception as exc:
        raise Unavailable(f"cell {state.name!r} is not reachable at {state.nats_url}") from exc
    try:
        msg = await nc.request(
            control_subject(state.name, verb), json.dumps(payload).encode(), timeout=timeout
        )
    except (NoRespondersError, NatsTimeout) as exc:
        raise Unavailable(f"cell {state.name!r} did not answer {verb!r}") from exc
    finally:
        await nc.close()
    reply = json.loads(msg.data)
    if "error" in reply:
        raise InvalidArgument(reply["error"])
    return reply["result"]

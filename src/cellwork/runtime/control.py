"""The cell's control channel: one Unix socket in the state directory, no NATS.

``cellwork status``, ``scale``, ``restart``, ``probe`` and ``chaos kill|pause|nats``
must work when NATS does not -- that is when they are needed most -- so the
supervisor answers on ``<state dir>/control.sock`` (mode 0600: only its user may
steer the cell). The CLI finds it, and the rest of what a running cell publishes
about itself, in ``<state dir>/cell.json``, written at start-up.

The protocol is JSON lines: the client sends ``{"verb": "scale", "service":
"feed", "replicas": 3}``, the supervisor answers ``{"result": ...}`` or
``{"error": "why"}`` on one line, for each request on the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cellwork.errors import InvalidArgument, Unavailable
from cellwork.observability.logging import get_logger
from cellwork.runtime.events import RequestRefused

_log = get_logger("cellwork.supervisor")

STATE_FILE = "cell.json"
SOCKET_FILE = "control.sock"
MAX_REQUEST_BYTES = 64 * 1024
# sun_path holds 108 bytes on Linux (104 on macOS), the terminating NUL included.
_MAX_SOCKET_PATH = 100

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""``await handle(verb, arguments)``: the result to send, or raises RequestRefused."""


def control_socket_path(state_dir: Path) -> Path:
    """Where the supervisor of the cell in ``state_dir`` listens: ``control.sock`` in
    it, or, when that path is too long for a Unix socket, a name derived from it in
    the temporary directory (``cell.json`` records which)."""
    path = state_dir / SOCKET_FILE
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(state_dir)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cellwork-{os.getuid()}-{digest}.sock"


@dataclass(frozen=True, slots=True)
class CellState:
    """What a running cell publishes about itself in its state directory."""

    name: str
    nats_url: str
    supervisor_pid: int
    state_dir: str
    nats_monitor_url: str = ""  # the embedded nats-server's monitoring port (/varz, /jsz)
    control_socket: str = ""  # the supervisor's control socket
    # The buckets the cell's instances use (``ServiceSettings``): ``cellwork config`` and
    # ``chaos delay|fail`` read and write them on ``nats_url``.
    registry_bucket: str = "cellwork_registry"
    config_bucket: str = "cellwork_config"

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


class ControlServer:
    """Answers control requests on a Unix socket; ``start()``, then ``close()``.

    A request that is not a JSON object with a string ``verb``, and anything
    ``handle`` raises, is answered ``{"error": ...}``; the connection stays usable."""

    def __init__(self, path: Path, handle: Handler) -> None:
        self.path = path
        self._handle = handle
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen; replaces a socket a dead supervisor left, refuses a live one's
        (Unavailable: the cell already runs)."""
        if self.path.is_socket():
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(str(self.path)), 2
                )
            except (OSError, TimeoutError):
                self.path.unlink(missing_ok=True)  # nobody answers: left by a dead supervisor
            else:
                writer.close()
                raise Unavailable(f"a supervisor already answers on {self.path}: the cell runs")
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES
        )
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        """Stop listening and remove the socket (connections in progress are cut)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = await self._answer(line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ValueError, ConnectionError):  # a line over the limit, a client gone
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"error": "a request is one JSON object a line"}
        if not isinstance(request, dict) or not isinstance(request.get("verb"), str):
            return {"error": 'a request is a JSON object with a "verb" string'}
        verb = request.pop("verb")
        try:
            return {"result": await self._handle(verb, request)}
        except RequestRefused as exc:
            return {"error": str(exc)}
        except Exception as exc:  # a bug: the asker gets a message, the log the traceback
            _log.exception("supervisor.control_failed", verb=verb, error=repr(exc))
            return {"error": f"the supervisor failed to answer {verb!r}: {exc!r}"}


async def request(state: CellState, verb: str, payload: dict[str, Any], timeout: float) -> Any:
    """Send one control request to the cell's supervisor and return its result.

    Raises Unavailable when nothing answers (in time), InvalidArgument with the
    supervisor's reason when it refuses."""
    if not state.control_socket:
        raise Unavailable(f"cell {state.name!r} has no control socket (an older supervisor?)")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(
                state.control_socket, limit=16 * 1024 * 1024
            )
            try:
                writer.write(json.dumps({**payload, "verb": verb}).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except (FileNotFoundError, ConnectionRefusedError):
        raise Unavailable(
            f"cell {state.name!r} is not running: nothing answers on {state.control_socket}"
        ) from None
    except TimeoutError:
        raise Unavailable(f"cell {state.name!r} did not answer {verb!r} in {timeout} s") from None
    except OSError as exc:
        raise Unavailable(f"cell {state.name!r}: {state.control_socket}: {exc}") from None
    if not line:
        raise Unavailable(f"cell {state.name!r} closed the connection without answering {verb!r}")
    reply = json.loads(line)
    if "error" in reply:
        raise InvalidArgument(reply["error"])
    return reply["result"]

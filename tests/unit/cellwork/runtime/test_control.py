"""The control channel on a real Unix socket: what a client sends, what it gets back."""

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from cellwork.errors import InvalidArgument, Unavailable
from cellwork.runtime.control import (
    CellState,
    ControlServer,
    control_socket_path,
    request,
)
from cellwork.runtime.events import RequestRefused


async def handle(verb: str, args: dict[str, Any]) -> Any:
    if verb == "echo":
        return args
    if verb == "refuse":
        raise RequestRefused("no, because")
    if verb == "bug":
        raise KeyError("oops")
    raise RequestRefused(f"unknown verb {verb!r}")


@pytest.fixture
async def server(tmp_path: Path):
    made = ControlServer(control_socket_path(tmp_path), handle)
    await made.start()
    yield made
    await made.close()


def state_of(server: ControlServer) -> CellState:
    return CellState("t", "nats://x", 1, "/s", control_socket=str(server.path))


async def raw(server: ControlServer, *lines: bytes) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    answers = []
    for line in lines:
        writer.write(line)
        await writer.drain()
        answers.append(json.loads(await reader.readline()))
    writer.close()
    return answers


async def test_a_request_gets_the_handlers_result(server):
    assert await request(state_of(server), "echo", {"n": 3}, timeout=5) == {"n": 3}


async def test_a_refusal_reaches_the_client_as_invalid_argument_with_the_reason(server):
    with pytest.raises(InvalidArgument, match="no, because"):
        await request(state_of(server), "refuse", {}, timeout=5)


async def test_a_handler_bug_is_an_error_answer_and_the_connection_stays_usable(server):
    answers = await raw(
        server, b'{"verb": "bug"}\n', b"not json\n", b"[1, 2]\n", b'{"verb": "echo", "a": 1}\n'
    )
    assert "failed to answer 'bug'" in answers[0]["error"]
    assert answers[1] == {"error": "a request is one JSON object a line"}
    assert answers[2] == {"error": 'a request is a JSON object with a "verb" string'}
    assert answers[3] == {"result": {"a": 1}}


async def test_the_socket_is_for_its_owner_only(server):
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600


async def test_a_socket_left_by_a_dead_supervisor_is_replaced(tmp_path: Path):
    path = control_socket_path(tmp_path)
    dead = ControlServer(path, handle)
    await dead.start()
    dead._server.close()  # type: ignore[union-attr]  # gone without removing its socket
    await dead._server.wait_closed()  # type: ignore[union-attr]
    assert path.is_socket()
    fresh = ControlServer(path, handle)
    await fresh.start()
    try:
        assert await request(state_of(fresh), "echo", {}, timeout=5) == {}
    finally:
        await fresh.close()
    assert not path.exists()


async def test_a_second_supervisor_does_not_take_a_live_ones_socket(server):
    with pytest.raises(Unavailable, match="already answers"):
        await ControlServer(server.path, handle).start()
    assert await request(state_of(server), "echo", {}, timeout=5) == {}


async def test_nothing_listening_is_unavailable_saying_the_cell_does_not_run(tmp_path: Path):
    state = CellState("t", "nats://x", 1, "/s", control_socket=str(tmp_path / "control.sock"))
    with pytest.raises(Unavailable, match="cell 't' is not running"):
        await request(state, "status", {}, timeout=5)
    with pytest.raises(Unavailable, match="no control socket"):
        await request(CellState("t", "nats://x", 1, "/s"), "status", {}, timeout=5)


def test_a_state_dir_too_deep_for_a_unix_socket_gets_one_in_the_temp_dir(tmp_path: Path):
    assert control_socket_path(Path("/srv/cell")) == Path("/srv/cell/control.sock")
    deep = tmp_path / ("d" * 120)
    path = control_socket_path(deep)
    assert path.name.startswith("cellwork-") and len(str(path)) <= 100
    assert path == control_socket_path(deep) != control_socket_path(tmp_path / ("e" * 120))

"""`cellwork stream` against a real push service (learnfeed's, in this process, on a real
nats-server): it prints what the service pushes, stops after --count, keeps an idle socket
open, and turns a refused or unreachable socket into one readable line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cellwork.events import connect_nats
from cellwork.gateway import JwtCodec
from cellwork.service import Service
from cellwork.testing import free_port, start_service
from learnfeed import contract
from learnfeed.push.service import create_service
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import events_pb2

KEY = "k1:" + "stream-test-key-" * 3
SUBSCRIBED = '{"type":"subscribed","topics":["feed"]}'
BOUND = 30.0  # seconds: generous, for a loaded 2-core machine


@dataclass
class Push:
    url: str
    jwt: JwtCodec
    nats_url: str


StartPush = Callable[..., Awaitable[Push]]


@pytest.fixture
async def start_push(nats_server, tmp_path: Path) -> AsyncIterator[StartPush]:
    services: list[Service] = []

    async def start(idle_timeout: float = 300.0) -> Push:
        port = free_port()
        service = await start_service(
            create_service,
            nats_server.url,
            settings_class=LearnfeedSettings,
            push_port=port,
            jwt_keys=KEY,
            push_idle_timeout=idle_timeout,
            state_dir=tmp_path,
        )
        services.append(service)
        jwt = LearnfeedSettings(jwt_keys=KEY).jwt()
        return Push(f"ws://127.0.0.1:{port}/v1/stream", jwt, nats_server.url)

    yield start
    for service in services:
        await service.drain(1)


async def stream(*args: str, token: str | None = None) -> asyncio.subprocess.Process:
    """``cellwork stream ARGS`` as a user runs it, the token (if any) in CELLWORK_TOKEN."""
    env = {k: v for k, v in os.environ.items() if k != "CELLWORK_TOKEN"}
    if token is not None:
        env["CELLWORK_TOKEN"] = token
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cellwork",
        "stream",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def next_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), BOUND)
    return line.decode().rstrip("\n")


async def finish(process: asyncio.subprocess.Process) -> tuple[int, list[str], str]:
    """Exit code, the remaining stdout lines, and stderr once the command has exited."""
    out, err = await asyncio.wait_for(process.communicate(), BOUND)
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines(), err.decode()


async def push_feed_ready(nats_url: str, user_id: str, *versions: int) -> None:
    """What the feed service announces: learnfeed's feed.ready event for ``user_id``."""
    nc = await connect_nats(nats_url, name="test-stream")
    try:
        for version in versions:
            event = events_pb2.FeedReady(user_id=user_id, version=version)
            await nc.publish(contract.feed_ready(user_id), event.SerializeToString())
        await nc.flush()
    finally:
        await nc.close()


async def test_stream_prints_the_frames_the_push_service_sends_and_exits_0_after_count(
    start_push: StartPush,
) -> None:
    push = await start_push()
    process = await stream("--url", push.url, "--count", "2", token=push.jwt.issue("ada"))
    # The ack comes once the push service routes ada's feed.ready to this socket.
    assert await next_line(process) == SUBSCRIBED
    await push_feed_ready(push.nats_url, "ada", 1, 2)
    code, lines, err = await finish(process)
    assert code == 0, err
    assert lines == ['{"type":"feed.ready","version":1}', '{"type":"feed.ready","version":2}']


async def test_a_bad_token_is_a_one_line_refusal_and_exit_1(start_push: StartPush) -> None:
    push = await start_push()
    code, lines, err = await finish(await stream("--url", push.url, token="not-a-token"))
    assert code == 1 and lines == []
    assert (
        err.strip() == f"error: {push.url} refused the socket: HTTP 403 Forbidden (check the token)"
    )

    code, _, err = await finish(await stream("--url", push.url))
    assert code == 1 and "HTTP 403" in err and "no token given: --token or CELLWORK_TOKEN" in err
    assert "Traceback" not in err


async def test_an_unreachable_server_is_a_one_line_error_and_exit_1() -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/stream"  # nothing listens there
    code, lines, err = await finish(await stream("--url", url, "--token", "t"))
    assert code == 1 and lines == []
    assert err.startswith(f"error: cannot reach {url}: ") and err.count("\n") == 1


async def test_keep_alive_pings_hold_an_idle_socket_open_and_their_pongs_are_not_printed(
    start_push: StartPush,
) -> None:
    push = await start_push(idle_timeout=1.0)
    token = push.jwt.issue("ada")
    # Pinged every 0.2 s, the socket outlives three idle timeouts; the timeout ends it.
    kept = await stream("--url", push.url, "--ping-interval", "0.2", "--timeout", "3", token=token)
    code, lines, err = await finish(kept)
    assert code == 0, err
    assert lines == [SUBSCRIBED]

    silent = await stream("--url", push.url, "--ping-interval", "0", token=token)
    code, lines, err = await finish(silent)
    assert code == 1 and lines == [SUBSCRIBED]
    assert err.strip() == f"error: the server closed the socket (1001 idle): {push.url}"


async def test_a_timeout_before_count_frames_is_exit_1_saying_how_many_came(
    start_push: StartPush,
) -> None:
    push = await start_push()
    process = await stream(
        "--url", push.url, "--count", "2", "--timeout", "2", token=push.jwt.issue("ada")
    )
    assert await next_line(process) == SUBSCRIBED
    await push_feed_ready(push.nats_url, "ada", 1)
    code, lines, err = await finish(process)
    assert code == 1 and lines == ['{"type":"feed.ready","version":1}']
    assert "timed out after 2 s with 1 of 2 frames" in err


async def test_sigterm_closes_the_socket_and_exits_0(start_push: StartPush) -> None:
    push = await start_push()
    process = await stream("--url", push.url, token=push.jwt.issue("ada"))
    assert await next_line(process) == SUBSCRIBED
    process.send_signal(signal.SIGTERM)
    code, lines, err = await finish(process)
    assert code == 0 and lines == [] and err == ""

"""``cellwork chaos delay|fail|clear`` as a user runs them, on two real echo instances:
the instance named gets the fault, the other keeps answering as before."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from cellwork.rpc.faults import faults_injected
from cellwork.runtime.control import CellState
from cellwork.service import Service
from cellwork.testing import NatsServer, start_service
from cellwork.testing.echo import create_service as create_echo
from cellwork.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.waiting import BOUND, wait_until

DELAY_MS = 300


async def cellwork(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cellwork",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"COLUMNS": "200", "PATH": ""},
    )
    out, _ = await asyncio.wait_for(process.communicate(), BOUND)
    return int(process.returncode or 0), out.decode()


class Echo:
    """One echo instance, called directly (no balancer: the test picks the instance)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.channel = aio.insecure_channel(service.info.address)
        self.stub = echo_pb2_grpc.EchoStub(self.channel)

    async def timed_call(self) -> tuple[float, grpc.StatusCode]:
        started = time.monotonic()
        try:
            await self.stub.Echo(echo_pb2.EchoRequest(payload=b"x"), timeout=10)
        except aio.AioRpcError as exc:
            return time.monotonic() - started, exc.code()
        return time.monotonic() - started, grpc.StatusCode.OK


@pytest.fixture
async def echoes(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[list[Echo]]:
    CellState("t", nats_server.url, 0, str(tmp_path)).write(tmp_path)
    started = [
        Echo(await start_service(create_echo, nats_server.url, instance_id=f"echo-{n}"))
        for n in range(2)
    ]
    yield started
    for echo in started:
        await echo.channel.close()
        await echo.service.drain(1)


def injected(kind: str) -> float:
    return faults_injected().labels("echo", kind)._value.get()


async def test_delay_slows_the_instance_named_and_clear_removes_it(echoes, tmp_path):
    slowed, other = echoes
    cell = ("--state-dir", str(tmp_path))
    code, out = await cellwork(
        "chaos", "delay", "echo", str(DELAY_MS), "--instance", "echo-0", *cell
    )
    assert code == 0 and f"echo-0: every call delayed {DELAY_MS} ms (sleeping)" in out, out
    await wait_until(lambda: slowed.service.faults.faults.delay_ms == DELAY_MS, "the delay on")

    before = injected("delay")
    for _ in range(3):
        seconds, status = await slowed.timed_call()
        assert status is grpc.StatusCode.OK and seconds >= 0.5 * DELAY_MS / 1000
    assert injected("delay") - before == 3  # echo-0's calls only: echo-1 has no fault
    for _ in range(3):
        await other.timed_call()
    assert injected("delay") - before == 3

    code, out = await cellwork("chaos", "clear", "echo", "--instance", "echo-0", *cell)
    assert code == 0 and "echo-0: faults cleared (echo.faults.cpu.echo-0" in out, out
    await wait_until(lambda: not slowed.service.faults.faults.active, "the delay off")
    await slowed.timed_call()
    assert injected("delay") - before == 3


async def test_delay_with_cpu_burns_the_time_in_the_instance(echoes, tmp_path):
    slowed, _ = echoes
    cell = ("--state-dir", str(tmp_path))
    code, out = await cellwork("chaos", "delay", "echo", "50", "--cpu", *cell)
    assert code == 0 and "echo: every call delayed 50 ms (burning CPU)" in out, out
    await wait_until(lambda: slowed.service.faults.faults.cpu, "the CPU fault on")
    before, cpu_before = injected("cpu"), time.process_time()
    for _ in range(4):
        _, status = await slowed.timed_call()
        assert status is grpc.StatusCode.OK
    assert injected("cpu") - before == 4
    assert time.process_time() - cpu_before >= 4 * 0.05  # burnt in this process
    code, out = await cellwork("chaos", "clear", "echo", *cell)
    assert code == 0 and "faults cleared" in out, out


async def test_fail_makes_the_instance_named_answer_internal_and_the_others_keep_answering(
    echoes, tmp_path
):
    failing, healthy = echoes
    cell = ("--state-dir", str(tmp_path))
    code, out = await cellwork("chaos", "fail", "echo", "1.0", "--instance", "echo-1", *cell)
    assert code == 0 and "echo-1: 100% of calls fail with INTERNAL" in out, out
    await wait_until(lambda: healthy.service.faults.faults.fail_rate == 1.0, "the failure on")
    before = injected("fail")
    assert [(await healthy.timed_call())[1] for _ in range(5)] == [grpc.StatusCode.INTERNAL] * 5
    assert [(await failing.timed_call())[1] for _ in range(5)] == [grpc.StatusCode.OK] * 5
    assert injected("fail") - before == 5

    code, out = await cellwork("chaos", "fail", "echo", "0.5", "--code", "unavailable", *cell)
    assert code == 0 and "echo: 50% of calls fail with UNAVAILABLE" in out, out
    await wait_until(
        lambda: failing.service.faults.faults.fail_rate == 0.5, "the service-wide rate"
    )
    assert healthy.service.faults.faults.fail_rate == 1.0  # its own override still wins

    code, out = await cellwork("chaos", "clear", "echo", *cell)
    assert code == 0, out
    await wait_until(
        lambda: not any(e.service.faults.faults.active for e in echoes), "every fault off"
    )
    assert [(await healthy.timed_call())[1] for _ in range(3)] == [grpc.StatusCode.OK] * 3
    code, out = await cellwork("chaos", "clear", "echo", *cell)
    assert code == 0 and "echo: no faults were set" in out, out


async def test_bad_faults_are_refused_with_the_reason_and_nothing_is_set(echoes, tmp_path):
    cell = ("--state-dir", str(tmp_path))
    for args, reason in [
        (("fail", "echo", "1.5"), "1.5 is greater than the maximum of 1"),
        (("fail", "echo", "0.5", "--code", "LATE"), "'LATE' is not one of"),
        (("delay", "echo", "100", "--instance", "echo-9"), "echo has no instance 'echo-9'"),
        (("delay", "nope", "100"), "no instance of 'nope' has published live settings"),
    ]:
        code, out = await cellwork("chaos", *args, *cell)
        assert code == 1 and reason in out and "Traceback" not in out, out
    assert not any(echo.service.faults.faults.active for echo in echoes)


async def test_a_proxy_stands_in_for_one_instance_then_gives_its_address_back(echoes, tmp_path):
    standing, other = echoes
    own = standing.service.info.address
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cellwork",
        "chaos",
        "proxy",
        "echo",
        "--instance",
        "echo-0",
        "--latency",
        str(DELAY_MS),
        "--for",
        "6",
        "--state-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"COLUMNS": "200", "PATH": ""},
    )

    def published() -> str:
        registration = standing.service.registration
        return registration.published.address if registration is not None else own

    await wait_until(lambda: published() != own, "echo-0 publishes the proxy's address")
    assert other.service.registration is not None
    assert other.service.registration.published.address == other.service.info.address
    async with aio.insecure_channel(published()) as channel:
        started = time.monotonic()
        await echo_pb2_grpc.EchoStub(channel).Echo(echo_pb2.EchoRequest(payload=b"x"), timeout=10)
        assert time.monotonic() - started >= DELAY_MS / 1000 * 0.9  # through the proxy
    out, _ = await asyncio.wait_for(process.communicate(), BOUND)
    assert process.returncode == 0, out.decode()
    assert "its own address again" in out.decode()
    await wait_until(lambda: published() == own, "echo-0 publishes its own address again")


async def test_a_proxy_for_an_unknown_instance_is_refused(echoes, tmp_path):
    code, out = await cellwork(
        "chaos", "proxy", "echo", "--instance", "echo-9", "--for", "1", "--state-dir", str(tmp_path)
    )
    assert code == 1 and "no registered instance 'echo-9'" in out

"""``cellwork config get|set`` as a user runs them (a subprocess), on a real nats-server
with a running instance that published its live settings."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from pydantic import BaseModel, Field

from cellwork import Service, ServiceSettings
from cellwork.config.bucket import ConfigBucket
from cellwork.events.connection import connect_nats
from cellwork.runtime.control import CellState
from cellwork.testing import NatsServer
from tests.waiting import BOUND, wait_until


class Calls(BaseModel):
    timeout: float = Field(2.0, gt=0, le=60)
    attempts: int = Field(3, ge=1, le=5)


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


async def test_set_then_get_round_trips_and_an_invalid_value_is_refused_unwritten(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    CellState("t", nats_server.url, 0, str(tmp_path)).write(tmp_path)
    cell = ("--state-dir", str(tmp_path))
    applied: list[Calls] = []
    service = Service("orders", ServiceSettings(nats_url=nats_server.url, instance_id="orders-0"))
    service.live("calls", Calls, applied.append)
    await service.start()
    nc = await connect_nats(nats_server.url, name="test-cli-config")
    try:
        code, out = await cellwork("config", "get", "orders.calls.timeout", *cell)
        assert code == 0 and "orders.calls.timeout is not set: 2.0 (the default)" in out, out

        code, out = await cellwork("config", "set", "orders.calls.timeout", "0.5", *cell)
        assert code == 0 and "orders.calls.timeout = 0.5 (revision" in out, out
        await wait_until(lambda: applied == [Calls(timeout=0.5)], "the instance to apply it")

        code, out = await cellwork(
            "config", "set", "orders.calls.attempts", "2", "--instance", "orders-0", *cell
        )
        assert code == 0 and "orders.calls.attempts.orders-0 = 2" in out, out
        code, out = await cellwork("config", "get", "orders.calls.attempts", "--json", *cell)
        assert code == 0, out
        shown = json.loads(out)
        assert (shown["value"], shown["default"], shown["instances"]) == (
            None,
            3,
            {"orders-0": 2},
        )
        code, out = await cellwork(
            "config", "get", "orders.calls.timeout", "--nats-url", nats_server.url
        )
        assert code == 0 and "orders.calls.timeout = 0.5 (revision" in out, out

        bucket = await ConfigBucket.bind(nc.jetstream(timeout=5), "cellwork_config")
        before = await bucket.get("orders.calls.timeout")
        for args, reason in [
            (("orders.calls.timeout", "0"), "0 is less than or equal to the minimum of 0"),
            (("orders.calls.timeout", "soon"), "'soon' is not of type 'number'"),
            (("orders.calls.attempts", "9"), "9 is greater than the maximum of 5"),
            (("orders.calls.retries", "1"), "no field 'retries' (the group has attempts, timeout)"),
            (("orders.limits.x", "1"), "orders has no live settings group 'limits'"),
            (("billing.calls.timeout", "1"), "no instance of 'billing' has published"),
        ]:
            code, out = await cellwork("config", "set", *args, *cell)
            assert code == 1 and reason in out and "Traceback" not in out, out
        code, out = await cellwork(
            "config", "set", "orders.calls.attempts", "2", "--instance", "orders-7", *cell
        )
        assert code == 1 and "orders has no instance 'orders-7' in the registry" in out, out
        assert "(it has orders-0)" in out
        assert await bucket.get("orders.calls.timeout") == before  # nothing was written
        assert await bucket.get("orders.calls.attempts.orders-7") is None
        assert service.live_settings.groups["calls"].value == Calls(timeout=0.5, attempts=2)

        code, out = await cellwork("config", "set", "orders.timeout", "1", *cell)
        assert code == 2 and "SERVICE.GROUP.FIELD" in out, out
    finally:
        await nc.close()
        await service.drain(1)

"""``cellwork chaos``: break a running cell on purpose, to watch it heal.

``kill``, ``pause`` and ``nats restart`` act on processes, through the supervisor's
control socket. ``delay``, ``fail`` and ``clear`` set the live settings group
``faults`` of a service (``cellwork.rpc.faults``) in the cell's config bucket, as
``cellwork config set`` does: every instance (or the one named) applies them at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from cellwork.cli_support import (
    CellFile,
    CellOption,
    NatsUrl,
    StateDir,
    cell_nats,
    console,
    fail,
    find_cell,
    on_nats,
)
from cellwork.config.admin import clear_group, write_settings
from cellwork.errors import CellworkError, NotFound
from cellwork.runtime.control import request
from cellwork.runtime.serve import run_forever

chaos = typer.Typer(no_args_is_help=True, help="Break a running cell on purpose, to watch it heal.")
chaos_nats = typer.Typer(no_args_is_help=True, help="Faults of the cell's embedded nats-server.")
chaos.add_typer(chaos_nats, name="nats")
Instance = Annotated[
    str | None, typer.Option("--instance", help="an instance id (default: the first running one)")
]
FaultInstance = Annotated[
    str | None, typer.Option("--instance", help="this instance only (default: every instance)")
]
Service = Annotated[str, typer.Argument(help="service name in the cell")]
FAULTS = "faults"  # the live settings group of cellwork.rpc.faults


def _control(
    verb: str, payload: dict[str, Any], cell: str | None, file: Path | None, state_dir: Path | None
) -> Any:
    """Send one control request to the running cell; exits 1 with the reason if refused."""
    state = find_cell(cell, file, state_dir)
    try:
        return run_forever(request(state, verb, payload, timeout=15))
    except CellworkError as exc:
        raise fail(exc.message) from None


@chaos.command("kill")
def chaos_kill(
    service: Annotated[str, typer.Argument(help="service name in the cell file")],
    instance: Instance = None,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
) -> None:
    """SIGKILL one instance of SERVICE; the supervisor restarts it as after a crash."""
    done = _control("kill", {"service": service, "instance": instance}, cell, file, state_dir)
    console.print(f"killed {done['instance']} (pid {done['pid']}) with SIGKILL")


@chaos.command("pause")
def chaos_pause(
    service: Annotated[str, typer.Argument(help="service name in the cell file")],
    seconds: Annotated[
        float, typer.Option("--for", help="seconds to keep it stopped", min=0.001, max=3600)
    ],
    instance: Instance = None,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
) -> None:
    """SIGSTOP one instance of SERVICE; the supervisor sends SIGCONT after --for seconds
    (unless its hang detection has replaced it by then)."""
    payload = {"service": service, "instance": instance, "seconds": seconds}
    done = _control("pause", payload, cell, file, state_dir)
    console.print(f"paused {done['instance']} (pid {done['pid']}) for {done['seconds']:g}s")


@chaos_nats.command("restart")
def chaos_nats_restart(
    down: Annotated[
        float,
        typer.Option(help="seconds it stays down (0: the supervisor's usual restart)", min=0),
    ] = 0.0,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
) -> None:
    """SIGKILL the cell's embedded nats-server; the supervisor starts it again on the
    same port with the same store."""
    done = _control("nats_restart", {"down": down}, cell, file, state_dir)
    after = f"after {down:g}s" if down else "after its usual back-off"
    console.print(f"killed nats-server (pid {done['pid']}) at {done['url']}; it restarts {after}")


def _set_faults(
    service: str,
    values: dict[str, Any],
    instance: str | None,
    where: tuple[str | None, Path | None, Path | None, str | None],
) -> None:
    nats = cell_nats(*where)
    on_nats(
        nats,
        lambda js: write_settings(
            js,
            nats.config_bucket,
            nats.registry_bucket,
            service,
            FAULTS,
            values,
            instance=instance,
        ),
    )


@chaos.command("delay")
def chaos_delay(
    service: Service,
    ms: Annotated[float, typer.Argument(metavar="MS", help="milliseconds per call", min=0)],
    instance: FaultInstance = None,
    cpu: Annotated[
        bool,
        typer.Option("--cpu", help="burn MS of CPU per call instead of sleeping (less capacity)"),
    ] = False,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Add MS milliseconds to every call SERVICE (or one instance) answers, until cleared."""
    # The mode first: an instance never burns CPU for a delay meant as a sleep.
    values = {"cpu": cpu, "delay_ms": ms}
    _set_faults(service, values, instance, (cell, file, state_dir, nats_url))
    how = "burning CPU" if cpu else "sleeping"
    console.print(f"{instance or service}: every call delayed {ms:g} ms ({how})", soft_wrap=True)


@chaos.command("fail")
def chaos_fail(
    service: Service,
    rate: Annotated[float, typer.Argument(metavar="RATE", help="share of calls, 0 to 1")],
    instance: FaultInstance = None,
    code: Annotated[
        str, typer.Option("--code", help="INTERNAL or UNAVAILABLE", case_sensitive=False)
    ] = "INTERNAL",
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Fail RATE of the calls SERVICE (or one instance) answers with --code, until cleared."""
    values = {"fail_code": code.upper(), "fail_rate": rate}
    _set_faults(service, values, instance, (cell, file, state_dir, nats_url))
    console.print(
        f"{instance or service}: {rate:.0%} of calls fail with {code.upper()}", soft_wrap=True
    )


@chaos.command("clear")
def chaos_clear(
    service: Service,
    instance: Annotated[
        str | None,
        typer.Option("--instance", help="this instance's faults only (default: all of them)"),
    ] = None,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Remove the delays and failures set on SERVICE: service-wide and on every instance
    (or only on --instance)."""
    nats = cell_nats(cell, file, state_dir, nats_url)
    cleared = on_nats(
        nats, lambda js: clear_group(js, nats.config_bucket, service, FAULTS, instance=instance)
    )
    if not cleared:
        console.print(f"{instance or service}: no faults were set", soft_wrap=True)
        return
    console.print(f"{instance or service}: faults cleared ({', '.join(cleared)})", soft_wrap=True)


@chaos.command("proxy")
def chaos_proxy(
    service: Service,
    instance: Annotated[str, typer.Option("--instance", help="the instance to stand in for")],
    latency: Annotated[float, typer.Option(help="ms added to each answer", min=0)] = 0.0,
    jitter: Annotated[float, typer.Option(help="ms of jitter on --latency", min=0)] = 0.0,
    blackhole: Annotated[
        bool, typer.Option("--blackhole", help="swallow all data, hold connections")
    ] = False,
    reset: Annotated[bool, typer.Option("--reset", help="reset every connection (RST)")] = False,
    bandwidth: Annotated[float, typer.Option(help="KB/s each way (0: unlimited)", min=0)] = 0.0,
    slicer: Annotated[int, typer.Option(help="answer in slices of about N bytes", min=0)] = 0,
    limit_data: Annotated[
        int, typer.Option("--limit-data", help="close after N bytes (0: no limit)", min=0)
    ] = 0,
    seconds: Annotated[
        float, typer.Option("--for", help="seconds to stand in (0: until Ctrl-C)", min=0)
    ] = 0.0,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Put a TCP fault proxy in front of one instance, in its place in the registry (its
    live setting ``registry.address``), with Toxiproxy's faults; runs in the foreground
    and gives the instance its own address back when it ends."""
    from cellwork.testing.faultproxy import (
        Bandwidth,
        Direction,
        FaultProxy,
        Latency,
        LimitData,
        ResetPeer,
        Slicer,
        Timeout,
    )

    toxics: list[Any] = []
    if latency or jitter:
        toxics.append(Latency(latency, jitter))
    if blackhole:
        toxics.append(Timeout(0))
    if reset:
        toxics.append(ResetPeer(0))
    if bandwidth:
        toxics.append(Bandwidth(bandwidth))
    if slicer:
        toxics.append(Slicer(slicer, 0, 1000))
    if limit_data:
        toxics.append(LimitData(limit_data))
    nats = cell_nats(cell, file, state_dir, nats_url)
    upstream = on_nats(
        nats, lambda js: _instance_address(js, nats.registry_bucket, service, instance)
    )

    async def stand_in() -> str:
        async with FaultProxy(upstream) as proxy:
            for toxic in toxics:
                proxy.add(toxic, direction=Direction.DOWNSTREAM)
            await _advertise(nats, service, instance, proxy.address)
            faults = ", ".join(t.kind for t in toxics) or "no faults"
            console.print(
                f"{instance}: callers dial {proxy.address} ({faults}) instead of {upstream}",
                soft_wrap=True,
            )
            try:
                if seconds:
                    await asyncio.sleep(seconds)
                else:
                    await asyncio.Event().wait()
            finally:
                await _advertise(nats, service, instance, "")
            return f"{proxy.stats.accepted} connections went through it"

    try:
        done = run_forever(stand_in())
    except KeyboardInterrupt:
        done = "stopped"
    console.print(f"{instance}: its own address again; {done}", soft_wrap=True)


async def _instance_address(js: Any, bucket: str, service: str, instance: str) -> str:
    from cellwork.discovery.instance import InstanceInfo

    try:
        kv = await js.key_value(bucket)
        entry = await kv.get(f"{service}.{instance}")
    except Exception as exc:  # not found, bucket missing: say which instance
        raise NotFound(f"{service} has no registered instance {instance!r}") from exc
    if not entry.value:
        raise NotFound(f"{service} has no registered instance {instance!r}")
    return InstanceInfo.from_json(entry.value).address


async def _advertise(nats: Any, service: str, instance: str, address: str) -> None:
    from cellwork.events.connection import jetstream_session
    from cellwork.service import STAND_IN_GROUP

    async with jetstream_session(nats.url, "cellwork-cli") as js:
        if address:
            await write_settings(
                js,
                nats.config_bucket,
                nats.registry_bucket,
                service,
                STAND_IN_GROUP,
                {"address": address},
                instance=instance,
            )
        else:
            await clear_group(js, nats.config_bucket, service, STAND_IN_GROUP, instance=instance)

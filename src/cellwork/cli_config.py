"""``cellwork config``: read and change live settings while the cell runs.

These commands talk to the cell's NATS themselves rather than through the
supervisor's control socket: the settings live in a bucket of that NATS, which the
instances watch, so a write can land only while NATS is up whatever path it takes;
a hop through the supervisor would add a second place to check values and would not
exist for a cell without one (on Kubernetes, ``--nats-url``), as with ``dlq``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from cellwork.cli_support import (
    CellFile,
    CellOption,
    NatsUrl,
    StateDir,
    cell_nats,
    console,
    on_nats,
)
from cellwork.config.admin import parse_setting, read_setting, write_settings
from cellwork.config.dynamic import parse_cli_value
from cellwork.errors import CellworkError

config_app = typer.Typer(
    no_args_is_help=True,
    help="Live settings: read and change them while the cell runs (no restart).",
)

Setting = Annotated[
    str, typer.Argument(metavar="KEY", help="SERVICE.GROUP.FIELD, e.g. feed.faults.delay_ms")
]
Instance = Annotated[
    str | None,
    typer.Option("--instance", help="set it for this instance only (an override)"),
]


@config_app.command("get")
def config_get(
    key: Setting,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show a setting: its service-wide value, each instance's override, its default."""
    where = cell_nats(cell, file, state_dir, nats_url)
    found: dict[str, Any] = on_nats(where, lambda js: read_setting(js, where.config_bucket, key))
    if as_json:
        print(json.dumps(found, indent=2))
        return
    default = json.dumps(found["default"])
    if found["value"] is None:
        console.print(f"{escape(key)} is not set: {escape(default)} (the default)", soft_wrap=True)
    else:
        value = json.dumps(found["value"])
        revision = found["revision"]
        console.print(
            f"{escape(key)} = {escape(value)} (revision {revision}; default {escape(default)})",
            soft_wrap=True,
        )
    for instance, value in found["instances"].items():
        console.print(f"  on {escape(instance)}: {escape(json.dumps(value))}", soft_wrap=True)


@config_app.command("set")
def config_set(
    key: Setting,
    value: Annotated[
        str, typer.Argument(metavar="VALUE", help='JSON (200, true, "x"), or plain text')
    ],
    instance: Instance = None,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Set a setting for every instance of the service (or one): they apply it at once.

    The value is checked against the schema the instances published; one that does not
    fit is refused (exit 1) and nothing is written."""
    try:
        service, group, field = parse_setting(key)
    except CellworkError as exc:
        raise typer.BadParameter(exc.message, param_hint="KEY") from None
    parsed = parse_cli_value(value)
    where = cell_nats(cell, file, state_dir, nats_url)
    written = on_nats(
        where,
        lambda js: write_settings(
            js,
            where.config_bucket,
            where.registry_bucket,
            service,
            group,
            {field: parsed},
            instance=instance,
        ),
    )
    for written_key, revision in written.items():
        shown = json.dumps(parsed)
        console.print(
            f"{escape(written_key)} = {escape(shown)} (revision {revision})", soft_wrap=True
        )

"""``cellwork dlq``: list, replay or drop the messages consumers gave up on."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from cellwork.cli_support import CellFile, CellOption, StateDir, console, fail, find_cell
from cellwork.errors import CellworkError
from cellwork.runtime.serve import run_forever

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from cellwork.events.deadletters import DeadLetter

T = TypeVar("T")

dlq_app = typer.Typer(
    no_args_is_help=True,
    help="The dead-letter stream: list, replay or drop the messages consumers gave up on.",
)

NatsUrl = Annotated[
    str | None,
    typer.Option("--nats-url", help="this NATS instead of the running cell's (cell.json)"),
]
Seqs = Annotated[
    list[int] | None,
    typer.Argument(metavar="SEQ...", help="dead letters by sequence (see dlq list)"),
]
AllOfThem = Annotated[bool, typer.Option("--all", help="every dead letter there is now")]


def _run_dlq(nats_url: str, action: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    from cellwork.events.connection import jetstream_session

    async def run() -> T:
        async with jetstream_session(nats_url, "cellwork-dlq") as js:
            return await action(js)

    try:
        return run_forever(run())
    except CellworkError as exc:
        raise fail(exc.message) from None


def _dlq_url(cell: str | None, file: Path | None, state_dir: Path | None, url: str | None) -> str:
    return url or find_cell(cell, file, state_dir).nats_url


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@dlq_app.command("list")
def dlq_list(
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
    limit: Annotated[int, typer.Option(min=1, help="show at most N")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show each dead letter: sequence, original subject, durable, reason, error, age."""
    from cellwork.events.deadletters import list_dead_letters

    letters = _run_dlq(
        _dlq_url(cell, file, state_dir, nats_url), lambda js: list_dead_letters(js, limit=limit)
    )
    now = time.time()
    if as_json:
        print(json.dumps([letter.as_json(now) for letter in letters], indent=2))
        return
    if not letters:
        console.print("no dead letters")
        return
    table = Table(title="dead letters")
    for column in ("seq", "subject", "durable", "reason", "deliveries", "age", "error"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            str(letter.seq),
            escape(letter.subject),
            escape(letter.durable),
            letter.reason,
            str(letter.deliveries),
            _age(letter.age(now)),
            escape(letter.error),
        )
    console.print(table)


def _chosen(seqs: list[int] | None, every: bool) -> list[int]:
    if bool(seqs) == every:
        raise fail("name dead letters by SEQ, or pass --all (not both)", 2)
    return seqs or []


async def _letters(js: JetStreamContext, seqs: list[int]) -> list[DeadLetter]:
    """The dead letters named (all of them now when none is): every one is looked up
    before any is touched, so an unknown sequence changes nothing."""
    from cellwork.events.deadletters import get_dead_letter, list_dead_letters

    if not seqs:
        return await list_dead_letters(js, limit=1_000_000)
    return [await get_dead_letter(js, seq) for seq in dict.fromkeys(seqs)]


@dlq_app.command("replay")
def dlq_replay(
    seqs: Seqs = None,
    every: AllOfThem = False,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Publish dead letters again to their original subjects (every durable on the subject
    sees them again), then remove them from the dead-letter stream."""
    from cellwork.events.deadletters import replay

    chosen = _chosen(seqs, every)

    async def action(js: JetStreamContext) -> list[int]:
        return await replay(js, await _letters(js, chosen))

    done = _run_dlq(_dlq_url(cell, file, state_dir, nats_url), action)
    console.print(f"replayed {len(done)} dead letters" + (f": {_seq_list(done)}" if done else ""))


@dlq_app.command("drop")
def dlq_drop(
    seqs: Seqs = None,
    every: AllOfThem = False,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Remove dead letters from the dead-letter stream for good."""
    from cellwork.events.deadletters import drop

    chosen = _chosen(seqs, every)

    async def action(js: JetStreamContext) -> list[int]:
        return await drop(js, await _letters(js, chosen))

    done = _run_dlq(_dlq_url(cell, file, state_dir, nats_url), action)
    console.print(f"dropped {len(done)} dead letters" + (f": {_seq_list(done)}" if done else ""))


def _seq_list(seqs: list[int]) -> str:
    return ", ".join(str(seq) for seq in seqs)

"""The dead-letter stream: what a dead letter carries, and listing, replaying, dropping.

A consumer that gives up on a message publishes its payload to
``deadletter.<stream>.<durable>`` in the ``DEADLETTER`` stream with the headers
below, then terminates the original. An operator reads them (``cellwork dlq list``),
sends one back to its original subject once its cause is fixed (``replay``: every
durable on that subject sees it again), or throws it away (``drop``).

Every write is safe to repeat: a dead letter's ``Nats-Msg-Id`` names the original
message (stream, sequence, durable), a replay's names the dead letter, so a retried
dead-lettering or a replay run twice within the streams' duplicate windows is
stored once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nats.js.api import RawStreamMsg
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from cellwork.errors import NotFound
from cellwork.events.publisher import MSG_ID_HEADER
from cellwork.events.streams import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM

SUBJECT_HEADER = "Cellwork-Subject"
STREAM_HEADER = "Cellwork-Stream"
SEQUENCE_HEADER = "Cellwork-Sequence"
DURABLE_HEADER = "Cellwork-Durable"
REASON_HEADER = "Cellwork-Reason"
ERROR_HEADER = "Cellwork-Error"
DELIVERIES_HEADER = "Cellwork-Deliveries"
FIRST_SEEN_HEADER = "Cellwork-First-Seen"
ORIGINAL_ID_HEADER = "Cellwork-Original-Msg-Id"
REPLAY_OF_HEADER = "Cellwork-Replay-Of"
"""On a replayed message: the original's ``Nats-Msg-Id``, which handlers see as the
event's id (``Delivery.msg_id``), so that idempotency by event id holds across a replay."""

# A header line holds an error message, not a traceback: long enough to read the cause.
ERROR_LIMIT = 500


def dead_letter_subject(stream: str, durable: str) -> str:
    """The subject a durable's dead letters go to."""
    return f"{DEAD_LETTER_PREFIX}.{stream}.{durable}"


def dead_letter_headers(
    *,
    subject: str,
    stream: str,
    sequence: int,
    durable: str,
    reason: str,
    error: str,
    deliveries: int,
    first_seen: float,
    msg_id: str,
) -> dict[str, str]:
    """The headers of a dead letter (``first_seen``: the original's stream timestamp, Unix
    seconds). Header values are one line: the error's newlines become spaces."""
    headers = {
        MSG_ID_HEADER: f"{durable}:{stream}:{sequence}",
        SUBJECT_HEADER: subject,
        STREAM_HEADER: stream,
        SEQUENCE_HEADER: str(sequence),
        DURABLE_HEADER: durable,
        REASON_HEADER: reason,
        ERROR_HEADER: " ".join(error.split())[:ERROR_LIMIT],
        DELIVERIES_HEADER: str(deliveries),
        FIRST_SEEN_HEADER: f"{first_seen:.3f}",
    }
    if msg_id:
        headers[ORIGINAL_ID_HEADER] = msg_id
    return headers


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the dead-letter stream, as an operator sees it."""

    seq: int
    subject: str
    stream: str
    durable: str
    reason: str
    error: str
    deliveries: int
    first_seen: float
    dead_lettered_at: float
    original_msg_id: str
    data: bytes

    def age(self, now: float) -> float:
        """Seconds since the original message was stored."""
        return max(0.0, now - self.first_seen) if self.first_seen else 0.0

    def as_json(self, now: float) -> dict[str, object]:
        """A JSON-ready record (without the payload)."""
        return {
            "seq": self.seq,
            "subject": self.subject,
            "stream": self.stream,
            "durable": self.durable,
            "reason": self.reason,
            "error": self.error,
            "deliveries": self.deliveries,
            "first_seen": self.first_seen,
            "dead_lettered_at": self.dead_lettered_at,
            "age_seconds": round(self.age(now), 3),
            "bytes": len(self.data),
        }

    @classmethod
    def of(cls, seq: int, headers: Mapping[str, str], data: bytes, stored_at: float) -> DeadLetter:
        """A dead letter from its stream message (headers missing in an older one read as
        empty)."""

        def number(name: str) -> float:
            try:
                return float(headers.get(name, "") or 0)
            except ValueError:
                return 0.0

        return cls(
            seq=seq,
            subject=headers.get(SUBJECT_HEADER, ""),
            stream=headers.get(STREAM_HEADER, ""),
            durable=headers.get(DURABLE_HEADER, ""),
            reason=headers.get(REASON_HEADER, ""),
            error=headers.get(ERROR_HEADER, ""),
            deliveries=int(number(DELIVERIES_HEADER)),
            first_seen=number(FIRST_SEEN_HEADER),
            dead_lettered_at=stored_at,
            original_msg_id=headers.get(ORIGINAL_ID_HEADER, ""),
            data=data,
        )

    def replay_msg_id(self) -> str:
        """The dedupe id of this dead letter's replay: the same for every replay of it."""
        return f"replay:{self.stream}:{self.durable}:{self.seq}"


async def list_dead_letters(js: JetStreamContext, *, limit: int = 1000) -> list[DeadLetter]:
    """The dead letters in stream order, at most ``limit``; empty when there is no
    dead-letter stream yet."""
    found: list[DeadLetter] = []
    seq = 1
    while len(found) < limit:
        try:
            msg = await js.get_msg(
                DEAD_LETTER_STREAM, seq=seq, subject=f"{DEAD_LETTER_PREFIX}.>", next=True
            )
        except NotFoundError:  # past the last one (or no stream)
            break
        found.append(_dead_letter(msg))
        seq = int(msg.seq or seq) + 1
    return found


async def get_dead_letter(js: JetStreamContext, seq: int) -> DeadLetter:
    """The dead letter at ``seq``; raises NotFound when there is none."""
    try:
        msg = await js.get_msg(DEAD_LETTER_STREAM, seq=seq)
    except NotFoundError:
        raise NotFound(f"no dead letter {seq} in {DEAD_LETTER_STREAM}") from None
    if not (msg.subject or "").startswith(f"{DEAD_LETTER_PREFIX}."):
        raise NotFound(f"no dead letter {seq} in {DEAD_LETTER_STREAM}")
    return _dead_letter(msg)


async def replay(js: JetStreamContext, letters: Iterable[DeadLetter]) -> list[int]:
    """Publish each dead letter's payload again to its original subject, then delete it;
    returns the sequences replayed. Raises NotFound for one that names no subject."""
    done: list[int] = []
    for letter in letters:
        if not letter.subject:
            raise NotFound(f"dead letter {letter.seq} names no original subject")
        headers = {MSG_ID_HEADER: letter.replay_msg_id()}
        if letter.original_msg_id:
            headers[REPLAY_OF_HEADER] = letter.original_msg_id
        await js.publish(letter.subject, letter.data, headers=headers)
        await _delete(js, letter.seq)
        done.append(letter.seq)
    return done


async def drop(js: JetStreamContext, letters: Iterable[DeadLetter]) -> list[int]:
    """Delete each dead letter; returns the sequences deleted."""
    done: list[int] = []
    for letter in letters:
        await _delete(js, letter.seq)
        done.append(letter.seq)
    return done


async def dead_letter_counts(js: JetStreamContext) -> dict[tuple[str, str], int]:
    """How many dead letters each ``(stream, durable)`` has; empty with no stream."""
    try:
        info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=f"{DEAD_LETTER_PREFIX}.>")
    except NotFoundError:
        return {}
    counts: dict[tuple[str, str], int] = {}
    for subject, count in (info.state.subjects or {}).items():
        _prefix, stream, durable = subject.split(".", 2)
        counts[(stream, durable)] = int(count)
    return counts


async def _delete(js: JetStreamContext, seq: int) -> None:
    try:
        await js.delete_msg(DEAD_LETTER_STREAM, seq)
    except APIError:
        try:
            await js.get_msg(DEAD_LETTER_STREAM, seq=seq)
        except NotFoundError:  # deleted meanwhile (a second operator): the effect stands
            return
        raise


def _dead_letter(msg: RawStreamMsg) -> DeadLetter:
    stored_at = msg.time.timestamp() if msg.time is not None else time.time()
    return DeadLetter.of(int(msg.seq or 0), msg.headers or {}, msg.data or b"", stored_at)

"""How fresh a feed is, shared by the feed service and the gateways that keep copies.

- refresh windows: each user's reads within one window ask for one refresh;
- current versions: a kept copy is never older than the newest version announced;
- the ``feed.changed`` announcement that drops older copies everywhere;
- ``PackedFeed``: a kept version in ~2 KB instead of ~14.5 KB.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from cellwork.cache import LocalCache


def window_of(user_id: str, now: float, window: float) -> int:
    """The number of the user's refresh window that ``now`` falls in.

    Each user's windows are shifted by a phase derived from the user id, so the
    windows of all users do not roll over at the same instant: without it every
    active user asks for a refresh in the same second, every ``window`` seconds.
    The phase is a stable hash (crc32), the same in every process.
    """
    phase = zlib.crc32(user_id.encode()) / 2**32 * window
    return int((now + phase) // window)


def refresh_id(user_id: str, now: float, window: float) -> str:
    """The dedupe id of a refresh asked for at ``now``: one per user per window.

    Every feed instance derives the same id for the same window, so the stream's
    duplicate detection coalesces across instances, not only within one.
    """
    return f"refresh.{user_id}.{window_of(user_id, now, window)}"


class RefreshCoalescer:
    """Remembers which users had a refresh asked for in the current window.

    Answers locally what the stream would dedupe anyway, so a hot user's reads do
    not cost a publish each. Bounded: forgets the oldest users past ``max_users``.
    """

    def __init__(self, window: float, max_users: int = 200_000) -> None:
        self.window = window
        self.max_users = max_users
        self._asked: OrderedDict[str, int] = OrderedDict()

    def should_request(self, user_id: str, now: float) -> str | None:
        """The dedupe id to publish with, or None when this window already asked."""
        bucket = window_of(user_id, now, self.window)
        if self._asked.get(user_id) == bucket:
            return None
        self._asked.pop(user_id, None)
        self._asked[user_id] = bucket
        if len(self._asked) > self.max_users:
            self._asked.popitem(last=False)
        return refresh_id(user_id, now, self.window)

    def forget(self, user_id: str) -> None:
        """Forget that this window asked (the request could not be sent)."""
        self._asked.pop(user_id, None)


class NewestVersions:
    """The newest feed version known per user (stored here or announced by a sibling).

    A cache must never keep or serve a copy older than this: a read that started
    before a new version was stored can come back after its announcement.
    Bounded: forgets the least recently updated users past ``max_users``.
    """

    def __init__(self, max_users: int = 200_000) -> None:
        self.max_users = max_users
        self._newest: OrderedDict[str, int] = OrderedDict()

    def saw(self, user_id: str, version: int) -> None:
        self._newest[user_id] = max(self._newest.pop(user_id, 0), version)
        if len(self._newest) > self.max_users:
            self._newest.popitem(last=False)

    def newest(self, user_id: str) -> int:
        return self._newest.get(user_id, 0)

    def __len__(self) -> int:
        return len(self._newest)

    def clear(self) -> None:
        self._newest.clear()


# Between the ids of a packed feed: a control character no item id holds.
_SEP = "\x1f"


@dataclass(frozen=True, slots=True)
class PackedFeed:
    """One version of a user's feed, packed: ids in one string, scores as float32.

    A version of 100 entries kept as a list of (id, score) tuples costs ~14.5 KB
    (tuples, float objects and id strings); packed it is ~1.9 KB. Scores travel as
    protobuf ``float`` (32 bits), so ``array('f')`` keeps them exactly. A page is
    decoded per read: splitting only up to the page's end costs ~1 us for 20 ids.
    """

    version: int
    generated_at: float
    ids: str
    scores: array[float]

    @classmethod
    def pack(
        cls, version: int, generated_at: float, entries: Sequence[tuple[str, float]]
    ) -> PackedFeed | None:
        """The packed version, or None when an id holds the separator (not kept)."""
        ids = _SEP.join(item_id for item_id, _ in entries)
        if ids.count(_SEP) != max(len(entries) - 1, 0):
            return None
        return cls(version, generated_at, ids, array("f", [score for _, score in entries]))

    @property
    def total(self) -> int:
        return len(self.scores)

    def page(self, offset: int, limit: int) -> list[tuple[str, float]]:
        """Entries ``offset`` to ``offset + limit`` (fewer at the end)."""
        end = min(offset + limit, len(self.scores))
        if offset >= end:
            return []
        ids = self.ids.split(_SEP, end)[offset:end]
        return list(zip(ids, self.scores[offset:end], strict=True))

    def entries(self) -> list[tuple[str, float]]:
        """Every entry, in rank order."""
        return self.page(0, len(self.scores))

    def nbytes(self) -> int:
        """What this version holds in memory (object, id string, score array)."""
        return sys.getsizeof(self) + sys.getsizeof(self.ids) + sys.getsizeof(self.scores)


class HasVersion(Protocol):
    @property
    def version(self) -> int: ...


V = TypeVar("V", bound=HasVersion)

# What remembering one user's newest version costs in ``NewestVersions`` (ordered
# dict node and slot, the user id string, an int), measured with tracemalloc.
NEWEST_ENTRY_BYTES = 200


class CurrentVersions(Generic[V]):
    """Each user's current feed version, kept in the instance (feed or gateway).

    Never keeps or serves a copy older than the newest version announced: a read that
    began before a new version was stored can come back after its announcement, and
    two stores can finish out of order.

    Bounded by ``maxsize`` versions and ``max_bytes`` as ``size`` estimates them
    (``PackedFeed.nbytes`` for packed versions), the oldest kept going first; the
    newest numbers of up to twice as many users are remembered beside them.
    """

    def __init__(
        self,
        ttl: float,
        maxsize: int = 100_000,
        max_bytes: int = 0,
        size: Callable[[V], int] = sys.getsizeof,
    ) -> None:
        self._kept: LocalCache[str, V] = LocalCache(
            maxsize=maxsize, ttl=ttl, max_bytes=max_bytes, size=size
        )
        self._newest = NewestVersions(max_users=2 * maxsize)

    @property
    def nbytes(self) -> int:
        """Estimated bytes held: kept versions plus remembered newest numbers."""
        return self._kept.nbytes + len(self._newest) * NEWEST_ENTRY_BYTES

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, user_id: str) -> V | None:
        kept = self._kept.get(user_id)
        if kept is None or kept.version < self._newest.newest(user_id):
            return None
        return kept

    def keep(self, user_id: str, value: V) -> None:
        """Keep ``value`` unless a newer version is known."""
        if value.version >= self._newest.newest(user_id):
            self._kept.put(user_id, value)

    def announce(self, user_id: str, version: int) -> None:
        """Version ``version`` was stored: older copies stop being served."""
        self._newest.saw(user_id, version)
        kept = self._kept.get(user_id)
        if kept is not None and kept.version < version:
            self._kept.invalidate(user_id)

    def clear(self) -> None:
        """Forget everything (after a NATS reconnect announcements may be missing)."""
        self._kept.clear()
        self._newest.clear()


def changed_payload(instance_id: str, version: int) -> bytes:
    """The body of ``_learnfeed.feed.changed.<user>``: who stored which version."""
    return f"{instance_id} {version}".encode()


def parse_changed(payload: bytes) -> tuple[str, int]:
    """(instance id, version) of a changed message; version 0 when unreadable."""
    instance, _, version = payload.decode(errors="replace").partition(" ")
    return instance, int(version) if version.isdigit() else 0


def is_stale(generated_at: float, now: float, window: float, cold: bool) -> bool:
    """A cold-start feed is stale, and so is a version older than the refresh window."""
    return cold or now - generated_at > window

"""How fresh a feed is, shared by the feed service and the gateways that keep copies.

- refresh windows: each user's reads within one window ask for one refresh;
- current versions: a kept copy is never older than the newest version announced;
- the ``feed.changed`` announcement that drops older copies everywhere.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
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

    def clear(self) -> None:
        self._newest.clear()


class HasVersion(Protocol):
    @property
    def version(self) -> int: ...


V = TypeVar("V", bound=HasVersion)


class CurrentVersions(Generic[V]):
    """Each user's current feed version, kept in the instance (feed or gateway).

    Never keeps or serves a copy older than the newest version announced: a read that
    began before a new version was stored can come back after its announcement, and
    two stores can finish out of order.
    """

    def __init__(self, ttl: float, maxsize: int = 100_000) -> None:
        self._kept: LocalCache[str, V] = LocalCache(maxsize=maxsize, ttl=ttl)
        self._newest = NewestVersions(max_users=2 * maxsize)

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

"""The faults a ``FaultProxy`` applies, as values, and the arithmetic behind them.

Toxiproxy's vocabulary and units: a toxic acts on one direction of every proxied
connection, ``upstream`` (what the caller sends to the instance) or ``downstream``
(what the instance answers, Toxiproxy's default).

=========================  ==========================================================
toxic                      what it does to the data of its direction
=========================  ==========================================================
``Latency``                delivered ``latency_ms`` ± ``jitter_ms`` after it arrived
``Timeout``                swallowed (a black hole); the connection is closed after
                           ``timeout_ms``, held open while 0
``ResetPeer``              the first data waits ``timeout_ms``, then both sides are
                           reset (RST)
``Bandwidth``              paced at ``rate_kb`` KB/s (1 KB = 1,000 bytes)
``Slicer``                 cut into pieces of about ``average_size`` bytes,
                           ``delay_us`` apart
``LimitData``              the first ``bytes`` pass, then the connection is closed
=========================  ==========================================================

The pure parts (how long a chunk still waits, when a paced chunk may go, where a
chunk is cut) take their clock and random source as arguments, so they are tested
without sockets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

_KB = 1000  # Toxiproxy's bandwidth unit: KB/s of 1,000 bytes


class Direction(StrEnum):
    """Which way the data a toxic acts on flows, in Toxiproxy's words."""

    UPSTREAM = "upstream"  # from the caller to the instance
    DOWNSTREAM = "downstream"  # from the instance back to the caller


@dataclass(frozen=True, slots=True)
class Latency:
    """Delay every chunk by ``latency_ms`` ± ``jitter_ms``, counted from its arrival."""

    kind: ClassVar[str] = "latency"
    latency_ms: float
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("latency and jitter are milliseconds >= 0")


@dataclass(frozen=True, slots=True)
class Timeout:
    """Swallow all data (a black hole); close the connection after ``timeout_ms``, or
    hold it open while the toxic stays when 0. Removing it closes the connections it
    acted on (as Toxiproxy does): their byte stream has lost data for good."""

    kind: ClassVar[str] = "timeout"
    timeout_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.timeout_ms < 0:
            raise ValueError("timeout is milliseconds >= 0")


@dataclass(frozen=True, slots=True)
class ResetPeer:
    """Reset the connection (RST on both sides, SO_LINGER 0) ``timeout_ms`` after the
    first data of its direction arrives; its data is dropped."""

    kind: ClassVar[str] = "reset_peer"
    timeout_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.timeout_ms < 0:
            raise ValueError("timeout is milliseconds >= 0")


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """Pace the data at ``rate_kb`` KB/s (1 KB = 1,000 bytes); 0 leaves it unlimited."""

    kind: ClassVar[str] = "bandwidth"
    rate_kb: float

    def __post_init__(self) -> None:
        if self.rate_kb < 0:
            raise ValueError("rate is KB/s >= 0")

    @property
    def bytes_per_second(self) -> float:
        return self.rate_kb * _KB


@dataclass(frozen=True, slots=True)
class Slicer:
    """Cut each chunk into pieces of ``average_size`` ± ``size_variation`` bytes and send
    them ``delay_us`` microseconds apart (as TCP may deliver them)."""

    kind: ClassVar[str] = "slicer"
    average_size: int
    size_variation: int = 0
    delay_us: float = 0.0

    def __post_init__(self) -> None:
        if self.average_size < 1 or self.delay_us < 0:
            raise ValueError("the average size is bytes >= 1, the delay microseconds >= 0")
        if not 0 <= self.size_variation < self.average_size:
            raise ValueError("the size variation is bytes >= 0 and below the average size")


@dataclass(frozen=True, slots=True)
class LimitData:
    """Let the first ``bytes`` of the direction through, then close the connection."""

    kind: ClassVar[str] = "limit_data"
    bytes: int

    def __post_init__(self) -> None:
        if self.bytes < 0:
            raise ValueError("the limit is bytes >= 0")


Toxic = Latency | Timeout | ResetPeer | Bandwidth | Slicer | LimitData


@dataclass(frozen=True, slots=True)
class AddedToxic:
    """A toxic as added to a proxy: its name, direction and the share of connections
    it acts on (``toxicity``, drawn once per connection, as Toxiproxy)."""

    name: str
    toxic: Toxic
    direction: Direction
    toxicity: float = 1.0


def latency_wait(toxic: Latency, waited: float, rng: random.Random) -> float:
    """Seconds a chunk that arrived ``waited`` seconds ago still waits (>= 0)."""
    delay_ms = toxic.latency_ms
    if toxic.jitter_ms:
        delay_ms += rng.uniform(-toxic.jitter_ms, toxic.jitter_ms)
    return max(0.0, delay_ms / 1000.0 - waited)


class Pacer:
    """When each chunk of a paced stream may go, on a clock passed in.

    A chunk of ``size`` bytes goes once the link has had ``size / rate`` seconds for
    it after the previous one went (or after it arrived, if the link was idle): the
    bytes released by any time ``t`` never exceed ``rate * (t - first arrival)``, and
    idle time is not saved up for a later burst.
    """

    def __init__(self, bytes_per_second: float) -> None:
        if bytes_per_second <= 0:
            raise ValueError("a pacer needs a rate > 0 bytes/s")
        self.rate = bytes_per_second
        self._free_at = float("-inf")

    def release_at(self, now: float, size: int) -> float:
        """The time at which a chunk of ``size`` bytes arriving at ``now`` may be sent."""
        self._free_at = max(now, self._free_at) + size / self.rate
        return self._free_at

    def piece_size(self) -> int:
        """Bytes per piece when a large chunk is sent in steps: 100 ms of the rate (as
        Toxiproxy), so a slow link trickles rather than pausing and bursting."""
        return max(1, int(self.rate / 10))


def slice_sizes(size: int, average: int, variation: int, rng: random.Random) -> list[int]:
    """Cut ``size`` bytes into pieces of about ``average`` (± ``variation``) bytes.

    As Toxiproxy's slicer: halve (± ``variation``) until a piece is within
    ``average + variation``, so no end tends to get a small or large piece. The
    pieces add up to ``size``, each is 1 to ``average + variation`` bytes (given
    ``variation < average``). An iterative walk: no recursion limit on a large chunk.
    """
    sizes: list[int] = []
    pending = [size] if size > 0 else []
    while pending:
        piece = pending.pop()
        if piece - average <= variation:
            sizes.append(piece)
            continue
        cut = piece // 2
        if variation:
            cut += rng.randrange(-variation, variation)
        pending.append(piece - cut)  # popped after the left half: order is kept
        pending.append(cut)
    return sizes

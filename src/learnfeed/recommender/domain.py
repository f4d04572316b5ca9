"""Ranking, vectorised with NumPy: pure functions over the catalog's item arrays.

score = follow weight   * [educator followed]
      + topic weight    * topic affinity (the user's interactions, decayed by age)
      + educator weight * educator affinity (same, per educator)
      + recency weight  * exp(-age / recency scale)
      + popularity weight * log1p(popularity) / log1p(max popularity)

then: completed items removed, and at most ``per_educator`` items of one
educator in the top ``head`` of the feed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

KIND_WEIGHT: dict[str, float] = {"view": 1.0, "like": 3.0, "complete": 2.0}


@dataclass(frozen=True, slots=True)
class Weights:
    follow: float = 3.0
    topic: float = 1.5
    educator: float = 1.5
    recency: float = 1.0
    popularity: float = 0.7
    half_life_days: float = 14.0
    recency_scale_days: float = 30.0


@dataclass(frozen=True, slots=True)
class UserSignals:
    """What the ranker knows of one user."""

    followed: frozenset[str]
    # (item id, kind, when) of each interaction.
    interactions: tuple[tuple[str, str, float], ...]


class ItemIndex:
    """The catalog as arrays, one row per item."""

    def __init__(self, rows: Sequence[tuple[str, str, str, float]]) -> None:
        """``rows``: (item id, educator id, topic, created_at)."""
        self.ids = [r[0] for r in rows]
        self.position = {item: n for n, item in enumerate(self.ids)}
        self.educators = sorted({r[1] for r in rows})
        self.topics = sorted({r[2] for r in rows})
        educator_of = {e: n for n, e in enumerate(self.educators)}
        topic_of = {t: n for n, t in enumerate(self.topics)}
        self.educator = np.array([educator_of[r[1]] for r in rows], dtype=np.int32)
        self.topic = np.array([topic_of[r[2]] for r in rows], dtype=np.int32)
        created = np.array([r[3] for r in rows], dtype=np.float64)
        newest = float(created.max()) if len(rows) else 0.0
        # Age relative to the newest item: a catalog seeded long ago still has "new" items.
        self.age_days = (newest - created) / 86400.0

    def __len__(self) -> int:
        return len(self.ids)


def affinities(
    index: ItemIndex,
    interactions: Iterable[tuple[str, str, float]],
    now: float,
    half_life_days: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Per-topic and per-educator affinity (each scaled to max 1), and the completed mask."""
    topic = np.zeros(len(index.topics))
    educator = np.zeros(len(index.educators))
    completed = np.zeros(len(index), dtype=bool)
    decay = math.log(2) / (half_life_days * 86400.0)
    for item_id, kind, at in interactions:
        n = index.position.get(item_id)
        if n is None:
            continue
        weight = KIND_WEIGHT.get(kind, 0.0) * math.exp(-decay * max(now - at, 0.0))
        topic[index.topic[n]] += weight
        educator[index.educator[n]] += weight
        if kind == "complete":
            completed[n] = True
    for vector in (topic, educator):
        peak = vector.max() if len(vector) else 0.0
        if peak > 0:
            vector /= peak
    return topic, educator, completed


def score_items(
    index: ItemIndex,
    user: UserSignals,
    popularity: npt.NDArray[np.float64],
    now: float,
    weights: Weights = Weights(),
) -> npt.NDArray[np.float64]:
    """One score per item (``-inf`` for completed items)."""
    topic_aff, educator_aff, completed = affinities(
        index, user.interactions, now, weights.half_life_days
    )
    followed = np.zeros(len(index.educators))
    for n, educator in enumerate(index.educators):
        if educator in user.followed:
            followed[n] = 1.0
    peak = float(popularity.max()) if len(popularity) else 0.0
    pop = np.log1p(popularity) / math.log1p(peak) if peak > 0 else np.zeros(len(index))
    scores = (
        weights.follow * followed[index.educator]
        + weights.topic * topic_aff[index.topic]
        + weights.educator * educator_aff[index.educator]
        + weights.recency * np.exp(-index.age_days / weights.recency_scale_days)
        + weights.popularity * pop
    )
    scores[completed] = -np.inf
    return scores


def top_with_cap(
    index: ItemIndex,
    scores: npt.NDArray[np.float64],
    size: int,
    head: int = 20,
    per_educator: int = 3,
) -> list[tuple[str, float]]:
    """The ``size`` best items, with at most ``per_educator`` per educator in the first ``head``."""
    finite = np.flatnonzero(np.isfinite(scores))
    if not len(finite):
        return []
    # Only the best few hundred can reach the feed: partial sort, then order those.
    pool = min(len(finite), size + head * per_educator * 4)
    best = finite[np.argpartition(-scores[finite], pool - 1)[:pool]]
    order = best[np.argsort(-scores[best], kind="stable")]
    head_part: list[int] = []
    rest: list[int] = []
    per: dict[int, int] = {}
    for n in order:
        educator = int(index.educator[n])
        if len(head_part) < head and per.get(educator, 0) < per_educator:
            per[educator] = per.get(educator, 0) + 1
            head_part.append(int(n))
        else:
            rest.append(int(n))  # still in score order: the tail is ranked as scored
    chosen = (head_part + rest)[:size]
    return [(index.ids[n], float(scores[n])) for n in chosen]


def rank(
    index: ItemIndex,
    user: UserSignals,
    popularity: npt.NDArray[np.float64],
    now: float,
    size: int = 100,
    weights: Weights = Weights(),
) -> list[tuple[str, float]]:
    """The user's ranked feed: (item id, score), best first."""
    return top_with_cap(index, score_items(index, user, popularity, now, weights), size)

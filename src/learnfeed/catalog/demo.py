"""The demo catalog: 50 educators and 5,000 lessons and posts, the same on every machine."""

from __future__ import annotations

import random

from learnfeed.catalog.store import Educator, Item

TOPICS = (
    "python",
    "data",
    "design",
    "math",
    "music",
    "languages",
    "writing",
    "business",
    "biology",
    "history",
)
_FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Barbara",
    "Edsger",
    "Frances",
    "Donald",
    "Radia",
    "Ken",
    "Margaret",
    "Tim",
    "Hedy",
    "Linus",
    "Katherine",
    "John",
    "Sophie",
)
_LAST = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Liskov",
    "Dijkstra",
    "Allen",
    "Knuth",
    "Perlman",
    "Thompson",
    "Hamilton",
    "Berners",
    "Lamarr",
    "Torvalds",
    "Johnson",
    "Backus",
    "Wilson",
)
_LESSON = (
    "Introduction to",
    "Advanced",
    "A practical guide to",
    "Ten ideas in",
    "Understanding",
    "Getting started with",
    "Deep dive:",
    "Patterns in",
)
_POST = (
    "Notes on",
    "Why I teach",
    "Common mistakes in",
    "Reading list:",
    "Q&A about",
    "A week of",
    "Myths about",
    "Tools for",
)
# Fixed epoch: the catalog is identical wherever and whenever it is seeded.
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SPAN = 120 * 86400.0

EDUCATORS = 50
ITEMS = 5000


def demo_catalog(seed: int = 7) -> tuple[list[Educator], list[Item]]:
    """Educators ``e001``..``e050`` and items ``i00001``..``i05000``."""
    rng = random.Random(seed)
    educators = [
        Educator(
            id=f"e{n:03d}",
            name=f"{_FIRST[n % len(_FIRST)]} {_LAST[(n * 7) % len(_LAST)]}",
            topic=TOPICS[n % len(TOPICS)],
        )
        for n in range(1, EDUCATORS + 1)
    ]
    items = []
    for n in range(1, ITEMS + 1):
        educator = educators[rng.randrange(EDUCATORS)]
        topic = educator.topic if rng.random() < 0.8 else rng.choice(TOPICS)
        kind = "lesson" if rng.random() < 0.6 else "post"
        words = _LESSON if kind == "lesson" else _POST
        items.append(
            Item(
                id=f"i{n:05d}",
                kind=kind,
                title=f"{rng.choice(words)} {topic} #{n}",
                topic=topic,
                educator_id=educator.id,
                educator_name=educator.name,
                created_at=EPOCH - rng.random() * SPAN,
                duration_seconds=rng.randrange(120, 3600) if kind == "lesson" else 0,
            )
        )
    return educators, items

"""What learnfeed's services agree on: streams, subjects, interaction kinds, shared keys.

Every publisher, consumer and subscriber takes these names from here, so two services
cannot drift apart on a subject or a kind. The gRPC contracts are the ``.proto`` files.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from cellwork.events import StreamSpec

FEED_STREAM = "FEED"
INTERACTIONS_STREAM = "INTERACTIONS"

REFRESH_REQUESTED = "feed.refresh.requested"
FEED_READY_PREFIX = "feed.ready"
INTERACTION_PREFIX = "interaction"
# Core NATS only (not stored): a feed instance that stored a version tells its siblings
# and the gateways, which drop their copies.
FEED_CHANGED_PREFIX = "_learnfeed.feed.changed"

InteractionKind = Literal["view", "like", "complete"]
INTERACTION_KINDS: tuple[InteractionKind, ...] = get_args(InteractionKind)

# GetFeed's largest page: the feed service refuses more, gateways keep versions up to it.
FEED_PAGE_MAX = 100

# The feed id under which the recommender stores the global ranking (popular and
# recent), the other half of a new user's cold-start feed.
POPULAR_FEED = "_popular"

# The address rule identity applies, also stated in the gateway's OpenAPI schema.
# Visible ASCII but "@": explicit ranges mean the same in every regex engine (pydantic
# checks the schema with Rust's, identity with Python's).
_ADDR = r"[\x21-\x3f\x41-\x7e]"
EMAIL_PATTERN = rf"^[ \t]*{_ADDR}{{1,64}}@{_ADDR}{{1,190}}\.{_ADDR}{{2,63}}[ \t]*$"
EMAIL = re.compile(EMAIL_PATTERN)


def feed_ready(user_id: str) -> str:
    """The subject announcing a new feed version for one user."""
    return f"{FEED_READY_PREFIX}.{user_id}"


def feed_changed(user_id: str) -> str:
    """The subject telling feed instances and gateways to drop a user's kept version."""
    return f"{FEED_CHANGED_PREFIX}.{user_id}"


def interaction(kind: str) -> str:
    """The subject of one kind of interaction."""
    return f"{INTERACTION_PREFIX}.{kind}"


def user_of(subject: str, prefix: str) -> str:
    """The user id at the end of ``<prefix>.<user>``; raises ValueError for another subject."""
    if not subject.startswith(prefix) or subject[len(prefix) : len(prefix) + 1] != ".":
        raise ValueError(f"{subject!r} is not a {prefix}.<user> subject")
    user_id = subject[len(prefix) + 1 :]
    if not user_id:
        raise ValueError(f"{subject!r} names no user")
    return user_id


# How long an interaction event can still reach its consumers: while it is in the
# INTERACTIONS stream, then while it waits in the dead-letter stream for a replay
# (cellwork keeps dead letters 30 days). Whoever dedupes interactions by event id
# must remember the ids at least this long.
INTERACTIONS_MAX_AGE = 30 * 86400.0
DEAD_LETTER_MAX_AGE = 30 * 86400.0
INTERACTION_REDELIVERY_HORIZON = INTERACTIONS_MAX_AGE + DEAD_LETTER_MAX_AGE


def streams(refresh_window: float, *, interactions_max_bytes: int) -> tuple[StreamSpec, ...]:
    """learnfeed's streams; refresh ids dedupe for at least one refresh window.

    ``interactions_max_bytes`` caps INTERACTIONS (-1: by age only); past it the
    oldest interactions go, consumed or not.
    """
    return (
        StreamSpec(
            FEED_STREAM,
            (REFRESH_REQUESTED, f"{FEED_READY_PREFIX}.*"),
            duplicate_window=max(120.0, refresh_window),
            max_age=24 * 3600.0,
        ),
        StreamSpec(
            INTERACTIONS_STREAM,
            (f"{INTERACTION_PREFIX}.*",),
            max_age=INTERACTIONS_MAX_AGE,
            max_bytes=interactions_max_bytes,
        ),
    )

"""Stream and subject names, in one place for every publisher and consumer."""

from __future__ import annotations

from cellwork.events import StreamSpec

FEED_STREAM = "FEED"
INTERACTIONS_STREAM = "INTERACTIONS"

REFRESH_REQUESTED = "feed.refresh.requested"
FEED_READY_PREFIX = "feed.ready"
INTERACTION_PREFIX = "interaction"
INTERACTION_KINDS = ("view", "like", "complete")
# Core NATS only (not stored): a feed instance that stored a version tells its siblings.
FEED_CHANGED_PREFIX = "_learnfeed.feed.changed"


def feed_ready(user_id: str) -> str:
    """The subject announcing a new feed version for one user."""
    return f"{FEED_READY_PREFIX}.{user_id}"


def feed_changed(user_id: str) -> str:
    """The subject telling feed instances to drop their cached version of a user's feed."""
    return f"{FEED_CHANGED_PREFIX}.{user_id}"


def interaction(kind: str) -> str:
    """The subject of one kind of interaction."""
    return f"{INTERACTION_PREFIX}.{kind}"


def streams(refresh_window: float) -> tuple[StreamSpec, ...]:
    """learnfeed's streams; refresh ids dedupe for at least one refresh window."""
    return (
        StreamSpec(
            FEED_STREAM,
            (REFRESH_REQUESTED, f"{FEED_READY_PREFIX}.*"),
            duplicate_window=max(120.0, refresh_window),
            max_age=24 * 3600.0,
        ),
        StreamSpec(INTERACTIONS_STREAM, (f"{INTERACTION_PREFIX}.*",), max_age=30 * 86400.0),
    )

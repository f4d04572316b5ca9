"""feed: feed versions per user; asks for refreshes (gRPC, publishes events)."""

from learnfeed.feed.service import create_service

__all__ = ["create_service"]

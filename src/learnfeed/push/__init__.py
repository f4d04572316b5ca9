"""push: WebSocket connections of users, told when their feed is ready."""

from learnfeed.push.service import create_service

__all__ = ["create_service"]

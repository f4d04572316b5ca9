"""catalog: educators, lessons and posts (gRPC)."""

from learnfeed.catalog.service import create_service

__all__ = ["create_service"]

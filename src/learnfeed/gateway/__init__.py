"""gateway: the public HTTP API (port 8080), stateless, over gRPC to the services."""

from learnfeed.gateway.service import create_service

__all__ = ["create_service"]

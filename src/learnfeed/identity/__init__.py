"""identity: sign-up, login, tokens, profiles, follows (gRPC)."""

from learnfeed.identity.service import create_service

__all__ = ["create_service"]

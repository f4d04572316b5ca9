"""recommender: ranks each user's feed from behaviour (event worker, consumer group)."""

from learnfeed.recommender.service import create_service

__all__ = ["create_service"]

"""feed: feed versions per user; asks for refreshes (gRPC, publishes events).

``cellwork serve learnfeed.feed`` runs it (``create_service`` in ``service.py``).
"""

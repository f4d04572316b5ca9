"""push: WebSocket connections of users, told when their feed is ready.

``cellwork serve learnfeed.push`` runs it (``create_service`` in ``service.py``).
"""

"""catalog: educators, lessons and posts (gRPC).

``cellwork serve learnfeed.catalog`` runs it (``create_service`` in ``service.py``).
"""

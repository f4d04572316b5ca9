"""gateway: the public HTTP API (port 8080), stateless, over gRPC to the services.

``cellwork serve learnfeed.gateway`` runs it (``create_service`` in ``service.py``).
"""

"""identity: sign-up, login, tokens, profiles, follows (gRPC).

``cellwork serve learnfeed.identity`` runs it (``create_service`` in ``service.py``).
"""

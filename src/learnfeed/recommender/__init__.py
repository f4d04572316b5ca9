"""recommender: ranks each user's feed from behaviour (event worker, consumer group).

``cellwork serve learnfeed.recommender`` runs it (``create_service`` in ``service.py``).
"""

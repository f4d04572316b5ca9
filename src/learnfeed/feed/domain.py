"""Feed's own rules: when a burst of interactions asks for a refresh."""

from __future__ import annotations

from collections import OrderedDict


class BurstCounter:
    """Counts a user's interactions; says when ``threshold`` of them make a burst."""

    def __init__(self, threshold: int, max_users: int = 200_000) -> None:
        self.threshold = threshold
        self.max_users = max_users
        self._counts: OrderedDict[str, int] = OrderedDict()

    def add(self, user_id: str) -> bool:
        """Count one interaction; True (and reset) when it completes a burst."""
        count = self._counts.pop(user_id, 0) + 1
        if count >= self.threshold:
            return True
        self._counts[user_id] = count
        if len(self._counts) > self.max_users:
            self._counts.popitem(last=False)
        return False

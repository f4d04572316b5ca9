"""Routes that name their template, so the edge's metrics can label requests by it."""

from __future__ import annotations

from starlette.routing import Match, Route
from starlette.types import Scope


class TemplateRoute(Route):
    """A Starlette route that records itself in the scope, as FastAPI's routes do, so
    HttpMetrics labels its requests by template instead of ``unmatched``."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match != Match.NONE:
            child["route"] = self
        return match, child

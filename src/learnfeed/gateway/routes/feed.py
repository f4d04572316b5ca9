"""GET /v1/feed (the hot route) and GET /v1/items/{item_id}.

GET /v1/feed is served by a plain Starlette route, without FastAPI's dependency
machinery (a third of the gateway's CPU on this route); a FastAPI route with the same
``FeedQuery`` model documents it in the OpenAPI document, and answers the same way
should the plain route ever be removed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from cellwork import InvalidArgument, NotFound, ValidationFailed
from cellwork.gateway import TemplateRoute, error_responses
from learnfeed.gateway import models
from learnfeed.gateway.access import Access, User
from learnfeed.gateway.feeds import FeedPages
from learnfeed.gateway.items import Items
from learnfeed.gateway.openapi import AUTHED
from learnfeed.gateway.render import JSON

ItemId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class FeedRoutes:
    """The user's feed, a page at a time, and single items."""

    def __init__(self, pages: FeedPages, items: Items, access: Access) -> None:
        self.pages = pages
        self.items = items
        self.access = access

    async def feed(self, request: Request) -> Response:
        """GET /v1/feed, served: token, limit, query, then the page."""
        user = self.access.user(request)
        params = request.query_params
        try:
            query = models.FeedQuery(limit=params.get("limit", 20), cursor=params.get("cursor"))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValidationFailed(f"query.{where}: {first['msg']}") from None
        return await self.pages.response(request, user, query.limit, query.cursor)

    async def documented_feed(
        self, request: Request, user: User, query: Annotated[models.FeedQuery, Query()]
    ) -> Response:
        """The current version of the caller's feed, enriched, a page at a time."""
        return await self.pages.response(request, user, query.limit, query.cursor)

    async def item(self, user: User, item_id: ItemId) -> Response:
        """One lesson or post with its educator."""
        found = await self.items.get([item_id])
        if item_id not in found:
            raise NotFound(f"no item {item_id}")
        return Response(found[item_id], media_type=JSON)

    def serving_route(self) -> TemplateRoute:
        """The plain route that serves GET /v1/feed; put it before the router's routes."""
        return TemplateRoute("/v1/feed", self.feed, methods=["GET"])

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route(
            "/v1/feed",
            self.documented_feed,
            methods=["GET"],
            response_model=models.FeedOut,
            responses={
                **error_responses(*AUTHED, InvalidArgument, ValidationFailed),
                304: {"description": "not modified"},
            },
        )
        router.add_api_route(
            "/v1/items/{item_id}",
            self.item,
            methods=["GET"],
            response_model=models.ItemOut,
            responses=error_responses(*AUTHED, NotFound, ValidationFailed),
        )
        return router

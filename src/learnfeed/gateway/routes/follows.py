"""POST and DELETE /v1/educators/{educator_id}/follow."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import Response

from cellwork import CellworkError, NotFound, ValidationFailed
from cellwork.gateway import error_responses
from cellwork.observability import get_logger
from learnfeed.gateway.access import User
from learnfeed.gateway.openapi import AUTHED
from learnfeed.v1 import catalog_pb2, feed_pb2, identity_pb2
from learnfeed.v1.catalog_client import CatalogClient
from learnfeed.v1.feed_client import FeedClient
from learnfeed.v1.identity_client import IdentityClient

EducatorId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]

_log = get_logger("learnfeed.gateway")


class FollowRoutes:
    """Follows of educators that exist; a new follow asks for a fresh feed."""

    def __init__(self, identity: IdentityClient, catalog: CatalogClient, feed: FeedClient) -> None:
        self.identity = identity
        self.catalog = catalog
        self.feed = feed

    async def follow(self, request: Request, user: User, educator_id: EducatorId) -> Response:
        """POST follows the educator, DELETE unfollows (both idempotent)."""
        await self._educator_exists(educator_id)
        ask = identity_pb2.FollowRequest(user_id=user, educator_id=educator_id)
        if request.method == "DELETE":
            await self.identity.unfollow(ask)
            return Response(status_code=204)
        if (await self.identity.follow(ask)).changed:
            try:
                await self.feed.request_refresh(
                    feed_pb2.RequestRefreshRequest(user_id=user, reason="follow")
                )
            except CellworkError as exc:  # the periodic pass catches up; the follow stands
                _log.warning("gateway.refresh_request_failed", error=exc.message)
        return Response(status_code=204)

    async def _educator_exists(self, educator_id: str) -> None:
        reply = await self.catalog.get_educators(catalog_pb2.GetEducatorsRequest(ids=[educator_id]))
        if not reply.educators:
            raise NotFound(f"no educator {educator_id}")

    def router(self) -> APIRouter:
        router = APIRouter()
        # One route for both methods, so a 405 here lists both in Allow.
        router.add_api_route(
            "/v1/educators/{educator_id}/follow",
            self.follow,
            methods=["POST", "DELETE"],
            status_code=204,
            responses=error_responses(*AUTHED, NotFound, ValidationFailed),
        )
        return router

"""GET /v1/me and GET /v1/home (profile, feed head and follows in one answer)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from cellwork import NotFound
from cellwork.gateway import error_responses, gather_parts
from learnfeed.gateway import models
from learnfeed.gateway.access import User
from learnfeed.gateway.feeds import FeedPages
from learnfeed.gateway.openapi import AUTHED
from learnfeed.gateway.render import JSON, profile_json
from learnfeed.v1 import identity_pb2
from learnfeed.v1.identity_client import IdentityClient

HOME_FEED_ITEMS = 5
# What ``partial`` names when the feed head came back with bare items.
ITEMS_PART = "items"


class HomeRoutes:
    """The caller's profile, and the home page's parts fetched concurrently."""

    def __init__(self, identity: IdentityClient, pages: FeedPages, part_deadline: float) -> None:
        self.identity = identity
        self.pages = pages
        self.part_deadline = part_deadline

    async def me(self, user: User) -> Response:
        return Response(orjson.dumps(await self._profile(user)), media_type=JSON)

    async def home(self, user: User) -> Response:
        """A part that fails or misses its deadline is left out and named in ``partial``;
        a feed head whose items the catalog could not describe in time is kept, bare, and
        ``items`` is named there."""
        bare: list[str] = []

        async def profile() -> dict[str, Any]:
            return await self._profile(user)

        async def follows() -> dict[str, Any]:
            reply = await self.identity.list_follows(identity_pb2.ListFollowsRequest(user_id=user))
            return {"educator_ids": list(reply.educator_ids)}

        async def feed_head() -> dict[str, Any]:
            answer = await self.pages.page(user, 0, HOME_FEED_ITEMS)
            if not answer.enriched:
                bare.append(ITEMS_PART)
            return answer.body

        parts, partial = await gather_parts(
            {"profile": profile, "feed": feed_head, "follows": follows}, self.part_deadline
        )
        if "feed" in parts:  # a feed head left out is named "feed", and that says it all
            partial += bare
        return Response(orjson.dumps({**parts, "partial": partial}), media_type=JSON)

    async def _profile(self, user: str) -> dict[str, Any]:
        reply = await self.identity.get_profile(identity_pb2.GetProfileRequest(user_id=user))
        return profile_json(reply)

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route(
            "/v1/me",
            self.me,
            methods=["GET"],
            response_model=models.Profile,
            responses=error_responses(*AUTHED, NotFound),
        )
        router.add_api_route(
            "/v1/home",
            self.home,
            methods=["GET"],
            response_model=models.HomeOut,
            responses=error_responses(*AUTHED),
        )
        return router

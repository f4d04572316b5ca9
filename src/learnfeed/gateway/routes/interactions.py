"""POST /v1/interactions: a view, like or completion, into the INTERACTIONS stream."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from cellwork import NotFound
from cellwork.events import Publisher
from cellwork.gateway import error_responses
from learnfeed import contract
from learnfeed.gateway import models
from learnfeed.gateway.access import User
from learnfeed.gateway.items import Items
from learnfeed.gateway.openapi import AUTHED, BODY
from learnfeed.gateway.render import JSON
from learnfeed.v1 import events_pb2

ACCEPTED = b'{"accepted":true}'


class InteractionRoutes:
    """Records interactions with items that exist; 202 once the stream has the event."""

    def __init__(self, items: Items, publisher: Publisher) -> None:
        self.items = items
        self.publisher = publisher

    async def interact(
        self, body: models.InteractionBody, user: User, request: Request
    ) -> Response:
        if body.item_id not in await self.items.get([body.item_id]):
            raise NotFound(f"no item {body.item_id}")
        event = events_pb2.Interaction(
            user_id=user, item_id=body.item_id, kind=body.kind, at=time.time()
        )
        key = request.headers.get("idempotency-key", "")
        msg_id = f"ix.{user}.{key[:64]}" if key else f"ix.{uuid.uuid4().hex}"
        # Awaited: 202 means the event is in the stream, not only queued here.
        await self.publisher.publish(
            contract.interaction(body.kind), event.SerializeToString(), msg_id
        )
        return Response(ACCEPTED, 202, media_type=JSON)

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route(
            "/v1/interactions",
            self.interact,
            methods=["POST"],
            status_code=202,
            response_model=models.Accepted,
            responses=error_responses(*AUTHED, *BODY, NotFound),
        )
        return router

"""POST /v1/auth/signup, /v1/auth/login, /v1/auth/refresh: tokens from identity.

Limited per client address (there is no user yet): ``Caller`` is checked before the body.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from cellwork import (
    AlreadyExists,
    DeadlineExceeded,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from cellwork.gateway import error_responses
from learnfeed.gateway import models
from learnfeed.gateway.access import Caller
from learnfeed.gateway.openapi import BODY
from learnfeed.gateway.render import tokens_response
from learnfeed.v1 import identity_pb2
from learnfeed.v1.identity_client import IdentityClient


class AuthRoutes:
    """Sign-up, login and refresh, answered with a token pair."""

    def __init__(self, identity: IdentityClient) -> None:
        self.identity = identity

    async def signup(self, body: models.SignupBody, _: Caller) -> Response:
        pair = await self.identity.sign_up(
            identity_pb2.SignUpRequest(email=body.email, password=body.password, name=body.name)
        )
        return tokens_response(pair, 201)

    async def login(self, body: models.LoginBody, _: Caller) -> Response:
        pair = await self.identity.login(
            identity_pb2.LoginRequest(email=body.email, password=body.password)
        )
        return tokens_response(pair)

    async def refresh(self, body: models.RefreshBody, _: Caller) -> Response:
        pair = await self.identity.refresh(
            identity_pb2.RefreshRequest(refresh_token=body.refresh_token)
        )
        return tokens_response(pair)

    def router(self) -> APIRouter:
        router = APIRouter(tags=["auth"])
        router.add_api_route(
            "/v1/auth/signup",
            self.signup,
            methods=["POST"],
            status_code=201,
            response_model=models.Tokens,
            responses=error_responses(
                *BODY, AlreadyExists, ResourceExhausted, Unavailable, DeadlineExceeded
            ),
        )
        for path, endpoint in (("/v1/auth/login", self.login), ("/v1/auth/refresh", self.refresh)):
            router.add_api_route(
                path,
                endpoint,
                methods=["POST"],
                response_model=models.Tokens,
                responses=error_responses(
                    *BODY, Unauthenticated, ResourceExhausted, Unavailable, DeadlineExceeded
                ),
            )
        return router

"""Who is calling: a verified access token within its user's rate limit, or (for sign-up,
login and refresh, before there is a user) a client address within its limit.

``Access`` is the gateway's; the FastAPI dependencies ``User`` and ``Caller`` find it in
the app's state (``app.state.access``), set where the app is built.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from cellwork import ResourceExhausted
from cellwork.gateway import JwtCodec, TokenBucketLimiter, bearer_token


class Access:
    """Token checks and rate limits of the gateway's routes."""

    def __init__(
        self, jwt: JwtCodec, per_user: TokenBucketLimiter, per_client: TokenBucketLimiter
    ) -> None:
        self.jwt = jwt
        self.per_user = per_user
        self.per_client = per_client

    def user(self, request: Request) -> str:
        """The caller's user id; raises Unauthenticated, or ResourceExhausted over its limit."""
        claims = self.jwt.verify(bearer_token(request.headers.get("authorization")))
        wait = self.per_user.try_acquire(claims.sub)
        if wait > 0:
            raise ResourceExhausted("too many requests", retry_after=wait)
        return claims.sub

    def client_address(self, request: Request) -> str:
        """The client's address; raises ResourceExhausted over its limit."""
        address = request.client.host if request.client else "unknown"
        wait = self.per_client.try_acquire(address)
        if wait > 0:
            raise ResourceExhausted("too many requests", retry_after=wait)
        return address


async def authenticated_user(request: Request) -> str:
    """FastAPI dependency: the caller's user id (async: FastAPI runs sync ones in threads)."""
    access: Access = request.app.state.access
    return access.user(request)


async def limited_client(request: Request) -> str:
    """FastAPI dependency: the client's address, within the auth routes' limit."""
    access: Access = request.app.state.access
    return access.client_address(request)


User = Annotated[str, Depends(authenticated_user)]
Caller = Annotated[str, Depends(limited_client)]

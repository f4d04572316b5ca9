"""The gateway's routes: thin handlers over the services, errors in the contract's shape.

Hot routes render with orjson and return bytes (FastAPI's per-request pydantic
serialisation is several times slower); the pydantic models still document every
route in the OpenAPI document.
"""

import asyncio
import hashlib
import re
import time
import uuid
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cellwork import CellworkError, Client, InvalidArgument, NotFound, ResourceExhausted
from cellwork.cache import LocalCache, RedisTier, TieredCache
from cellwork.events import Publisher
from cellwork.gateway import (
    BodyLimit,
    HttpMetrics,
    JwtCodec,
    RequestContext,
    TemplateRoute,
    TokenBucketLimiter,
    bearer_token,
    gather_parts,
    json_error,
)
from cellwork.observability import get_logger
from learnfeed import contract
from learnfeed.gateway import models
from learnfeed.gateway.feeds import FeedReader
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    events_pb2,
    feed_pb2,
    feed_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
)

HOME_FEED_ITEMS = 5
ENRICH_CHUNK = 10  # item ids per concurrent catalog call
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    503: "unavailable",
    504: "deadline_exceeded",
}
_log = get_logger("learnfeed.gateway")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": models.ErrorBody, "description": _STATUS_CODES.get(code, "error")}
        for code in codes
    }


AUTHED = (401, 429, 503, 504)
JSON = "application/json"


class Upstreams:
    """The gateway's clients and publisher, connected on start."""

    identity: Client[identity_pb2_grpc.IdentityStub]
    catalog: Client[catalog_pb2_grpc.CatalogStub]
    feed: Client[feed_pb2_grpc.FeedStub]
    publisher: Publisher

    def ready(self) -> dict[str, bool]:
        """Which upstream services have at least one usable endpoint."""
        out = {}
        for name in ("identity", "catalog", "feed"):
            client = getattr(self, name, None)
            out[name] = client is not None and client.has_endpoints()
        return out


# A cursor names the version it came from and where the next page starts. Its shape is
# a pattern in the OpenAPI document, so every cursor the document allows can be read.
CURSOR_PATTERN = r"^v[0-9]{1,12}o[0-9]{1,5}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(version: int, offset: int) -> str:
    return f"v{version}o{offset}"


def decode_cursor(cursor: str) -> int:
    """The offset a cursor points at; raises InvalidArgument for a malformed one."""
    if not _CURSOR.match(cursor):
        raise InvalidArgument("malformed cursor")
    return int(cursor.rpartition("o")[2])


def item_json(item: catalog_pb2.Item) -> bytes:
    """An item as JSON bytes, rendered once when it enters the cache."""
    return orjson.dumps(
        {
            "id": item.id,
            "kind": item.kind,
            "title": item.title,
            "topic": item.topic,
            "educator": {"id": item.educator_id, "name": item.educator_name},
            "created_at": item.created_at,
            "duration_seconds": item.duration_seconds,
        }
    )


def scored(rendered: bytes, score: float) -> orjson.Fragment:
    """A rendered item with its score added, embedded as is by ``orjson.dumps``."""
    return orjson.Fragment(b'%s,"score":%.4f}' % (rendered[:-1], score))


class Gateway:
    """What the routes share: settings, token codec, limiter, upstreams, item cache."""

    def __init__(self, cfg: LearnfeedSettings, jwt: JwtCodec) -> None:
        self.cfg = cfg
        self.jwt = jwt
        self.limiter = TokenBucketLimiter(cfg.rate_limit_rps, cfg.rate_limit_burst)
        self.auth_limiter = TokenBucketLimiter(cfg.auth_rate_limit_rps, cfg.auth_rate_limit_burst)
        self.up = Upstreams()
        self.feeds = FeedReader(cfg.refresh_window, keep=cfg.gateway_feed_cache)
        # Catalog items rarely change: caching them here, rendered, saves a hop and the
        # JSON work on most reads.
        # With CELLWORK_REDIS_URL, gateways share them through Redis: a new instance warms
        # from there instead of from the catalog.
        shared = (
            RedisTier.from_url(cfg.redis_url, "learnfeed:item", cfg.catalog_cache_ttl)
            if cfg.redis_url
            else None
        )
        self.items = TieredCache(LocalCache(maxsize=100_000, ttl=cfg.catalog_cache_ttl), shared)

    async def user(self, request: Request) -> str:
        """The caller's user id (a verified bearer token), within its rate limit."""
        claims = self.jwt.verify(bearer_token(request.headers.get("authorization")))
        wait = self.limiter.try_acquire(claims.sub)
        if wait > 0:
            raise RateLimited(wait)
        return claims.sub

    async def client_address(self, request: Request) -> str:
        """Sign-up, login and refresh are limited per client address (no user yet)."""
        address = request.client.host if request.client else "unknown"
        wait = self.auth_limiter.try_acquire(address)
        if wait > 0:
            raise RateLimited(wait)
        return address

    async def _load_items(self, ids: list[str]) -> dict[str, bytes]:
        # Misses are fetched in chunks, concurrently: the balancer spreads the chunks
        # over the catalog's instances, so a cold page costs one round trip.
        chunks = [ids[n : n + ENRICH_CHUNK] for n in range(0, len(ids), ENRICH_CHUNK)]
        replies = await asyncio.gather(
            *(
                self.up.catalog.call(
                    "GetItems", catalog_pb2.GetItemsRequest(ids=chunk), idempotent=True
                )
                for chunk in chunks
            )
        )
        return {item.id: item_json(item) for reply in replies for item in reply.items}

    async def get_items(self, ids: list[str]) -> dict[str, bytes]:
        """Items by id, as rendered JSON; unknown ids are absent."""
        return await self.items.get_many(ids, self._load_items)

    async def feed_page(self, user_id: str, offset: int, limit: int) -> tuple[dict[str, Any], str]:
        """One enriched page of the user's feed, and its entity tag."""
        page = await self.feeds.page(user_id, offset, limit)
        found = await self.get_items([item_id for item_id, _ in page.entries])
        # An item gone from the catalog since the feed was ranked is left out.
        kept = [(item_id, score) for item_id, score in page.entries if item_id in found]
        items = [scored(found[item_id], score) for item_id, score in kept]
        ids = ",".join(item_id for item_id, _ in kept)
        tag = hashlib.blake2b(
            f"{user_id}|{page.version}|{offset}|{limit}|{ids}".encode(), digest_size=8
        ).hexdigest()
        end = offset + len(page.entries)
        body = {
            "user_id": user_id,
            "version": page.version,
            "generated_at": page.generated_at,
            "stale": page.stale,
            "items": items,
            "next_cursor": encode_cursor(page.version, end) if end < page.total else None,
        }
        return body, f'"{tag}"'

    async def feed_response(
        self, request: Request, user: str, limit: int, cursor: str | None
    ) -> Response:
        """The answer to GET /v1/feed: a page with its ETag, or 304 when it matches."""
        offset = decode_cursor(cursor) if cursor else 0
        body, etag = await self.feed_page(user, offset, limit)
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(orjson.dumps(body), headers=headers, media_type=JSON)


class RateLimited(ResourceExhausted):
    def __init__(self, retry_after: float) -> None:
        super().__init__("too many requests")
        self.retry_after = retry_after


def tokens_response(pair: identity_pb2.TokenPair, status: int = 200) -> Response:
    body = {
        "user_id": pair.user_id,
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "expires_in": pair.expires_in,
    }
    return Response(orjson.dumps(body), status, media_type=JSON)


def profile_json(profile: identity_pb2.Profile) -> dict[str, Any]:
    return {
        "user_id": profile.user_id,
        "email": profile.email,
        "name": profile.name,
        "created_at": profile.created_at,
        "following_count": profile.following_count,
    }


def build_app(gw: Gateway) -> Any:
    """The FastAPI app, wrapped in the edge's fixed outer layers."""
    app = FastAPI(
        title="learnfeed",
        version="1",
        description="The personalized learning feed. Errors are "
        '`{"error": {"code": "...", "message": "..."}}`.',
    )
    User = Annotated[str, Depends(gw.user)]
    Caller = Annotated[str, Depends(gw.client_address)]
    up = gw.up

    @app.exception_handler(CellworkError)
    async def domain_error(request: Request, exc: CellworkError) -> Response:
        headers = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        if exc.http_status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return json_error(exc.http_status, exc.error_code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return json_error(400, "malformed_json", "request body is not valid JSON")
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return json_error(422, "validation_failed", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "error")
        # Keep the headers the status needs (Allow on a 405).
        return json_error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        _log.exception("gateway.unhandled", path=request.url.path)
        return json_error(500, "internal", "internal error")

    @app.post(
        "/v1/auth/signup",
        status_code=201,
        response_model=models.Tokens,
        responses=_errors(400, 409, 413, 422, 429, 503, 504),
        tags=["auth"],
    )
    async def signup(body: models.SignupBody, _: Caller) -> Response:
        pair = await up.identity.call(
            "SignUp",
            identity_pb2.SignUpRequest(email=body.email, password=body.password, name=body.name),
        )
        return tokens_response(pair, 201)

    @app.post(
        "/v1/auth/login",
        response_model=models.Tokens,
        responses=_errors(400, 401, 413, 422, 429, 503, 504),
        tags=["auth"],
    )
    async def login(body: models.LoginBody, _: Caller) -> Response:
        pair = await up.identity.call(
            "Login", identity_pb2.LoginRequest(email=body.email, password=body.password)
        )
        return tokens_response(pair)

    @app.post(
        "/v1/auth/refresh",
        response_model=models.Tokens,
        responses=_errors(400, 401, 413, 422, 429, 503, 504),
        tags=["auth"],
    )
    async def refresh(body: models.RefreshBody, _: Caller) -> Response:
        pair = await up.identity.call(
            "Refresh", identity_pb2.RefreshRequest(refresh_token=body.refresh_token)
        )
        return tokens_response(pair)

    @app.get("/v1/me", response_model=models.Profile, responses=_errors(*AUTHED, 404))
    async def me(user: User) -> Response:
        profile = await up.identity.call(
            "GetProfile", identity_pb2.GetProfileRequest(user_id=user), idempotent=True
        )
        return Response(orjson.dumps(profile_json(profile)), media_type=JSON)

    @app.get(
        "/v1/feed",
        response_model=models.FeedOut,
        responses={**_errors(*AUTHED, 400, 422), 304: {"description": "not modified"}},
    )
    async def feed(
        request: Request,
        user: User,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=20, pattern=CURSOR_PATTERN)] = None,
    ) -> Response:
        # Documents the route; requests are served by ``feed_fast`` below.
        return await gw.feed_response(request, user, limit, cursor)

    async def feed_fast(request: Request) -> Response:
        """GET /v1/feed without FastAPI's dependency machinery (a third of the
        gateway's CPU on this route), validating exactly as the documented route."""
        user = await gw.user(request)
        limit_text = request.query_params.get("limit")
        cursor = request.query_params.get("cursor")
        try:
            limit = 20 if limit_text is None else int(limit_text)
        except ValueError:
            return json_error(422, "validation_failed", "query.limit: must be an integer")
        if not 1 <= limit <= 100:
            return json_error(422, "validation_failed", "query.limit: must be 1 to 100")
        if cursor is not None and not _CURSOR.match(cursor):
            return json_error(422, "validation_failed", "query.cursor: not a cursor of this API")
        return await gw.feed_response(request, user, limit, cursor)

    app.router.routes.insert(0, TemplateRoute("/v1/feed", feed_fast, methods=["GET"]))

    @app.get(
        "/v1/items/{item_id}", response_model=models.ItemOut, responses=_errors(*AUTHED, 404, 422)
    )
    async def item(
        user: User,
        item_id: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
    ) -> Response:
        found = await gw.get_items([item_id])
        if item_id not in found:
            raise NotFound(f"no item {item_id}")
        return Response(found[item_id], media_type=JSON)

    @app.post(
        "/v1/interactions",
        status_code=202,
        response_model=models.Accepted,
        responses=_errors(*AUTHED, 400, 404, 413, 422),
    )
    async def interact(body: models.InteractionBody, user: User, request: Request) -> Response:
        if body.item_id not in await gw.get_items([body.item_id]):
            raise NotFound(f"no item {body.item_id}")
        event = events_pb2.Interaction(
            user_id=user, item_id=body.item_id, kind=body.kind, at=time.time()
        )
        key = request.headers.get("idempotency-key", "")
        msg_id = f"ix.{user}.{key[:64]}" if key else f"ix.{uuid.uuid4().hex}"
        # Awaited: 202 means the event is in the stream, not only queued here.
        await up.publisher.publish(
            contract.interaction(body.kind), event.SerializeToString(), msg_id
        )
        return Response(b'{"accepted":true}', 202, media_type=JSON)

    async def educator_exists(educator_id: str) -> None:
        reply = await up.catalog.call(
            "GetEducators", catalog_pb2.GetEducatorsRequest(ids=[educator_id]), idempotent=True
        )
        if not reply.educators:
            raise NotFound(f"no educator {educator_id}")

    EducatorId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]

    @app.api_route(
        "/v1/educators/{educator_id}/follow",
        methods=["POST", "DELETE"],
        status_code=204,
        responses=_errors(*AUTHED, 404, 422),
    )
    async def follow(request: Request, user: User, educator_id: EducatorId) -> Response:
        """POST follows the educator, DELETE unfollows (both idempotent)."""
        # One route for both methods, so a 405 here lists both in Allow.
        await educator_exists(educator_id)
        if request.method == "DELETE":
            await up.identity.call(
                "Unfollow", identity_pb2.FollowRequest(user_id=user, educator_id=educator_id)
            )
            return Response(status_code=204)
        reply = await up.identity.call(
            "Follow", identity_pb2.FollowRequest(user_id=user, educator_id=educator_id)
        )
        if reply.changed:
            try:
                await up.feed.call(
                    "RequestRefresh",
                    feed_pb2.RequestRefreshRequest(user_id=user, reason="follow"),
                    idempotent=True,
                )
            except CellworkError as exc:  # the periodic pass catches up; the follow stands
                _log.warning("gateway.refresh_request_failed", error=exc.message)
        return Response(status_code=204)

    @app.get("/v1/home", response_model=models.HomeOut, responses=_errors(*AUTHED))
    async def home(user: User) -> Response:
        async def profile() -> dict[str, Any]:
            reply = await up.identity.call(
                "GetProfile", identity_pb2.GetProfileRequest(user_id=user), idempotent=True
            )
            return profile_json(reply)

        async def follows() -> dict[str, Any]:
            reply = await up.identity.call(
                "ListFollows", identity_pb2.ListFollowsRequest(user_id=user), idempotent=True
            )
            return {"educator_ids": list(reply.educator_ids)}

        async def feed_head() -> dict[str, Any]:
            return (await gw.feed_page(user, 0, HOME_FEED_ITEMS))[0]

        parts, partial = await gather_parts(
            {"profile": profile, "feed": feed_head, "follows": follows}, gw.cfg.part_deadline
        )
        return Response(orjson.dumps({**parts, "partial": partial}), media_type=JSON)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        upstream = up.ready()
        ready = all(upstream.values())
        return Response(
            orjson.dumps({"ready": ready, "upstreams": upstream}),
            200 if ready else 503,
            media_type=JSON,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, max_bytes=gw.cfg.max_body_bytes)
    app.add_middleware(RequestContext, timeout=gw.cfg.call_timeout)
    app.add_middleware(HttpMetrics)
    return app

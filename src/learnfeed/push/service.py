"""push's WebSocket endpoint (``/v1/stream`` on port 8081) and its composition root."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from cellwork import Service, ServiceSettings, Unauthenticated
from cellwork.gateway import (
    DependencyCheck,
    JwtCodec,
    ReadinessCheck,
    bearer_token,
    install_error_handlers,
    probe_routes,
)
from cellwork.observability import get_logger
from learnfeed.push.hub import FRAMES, Hub
from learnfeed.settings import LearnfeedSettings

SERVICE_NAME = "push"
POLICY_VIOLATION = 1008
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013

_log = get_logger("learnfeed.push")


def socket_token(ws: WebSocket) -> str:
    """The access token from the Authorization header or ``?access_token=``."""
    header = ws.headers.get("authorization")
    if header:
        return bearer_token(header)
    token = ws.query_params.get("access_token", "")
    if not token:
        raise Unauthenticated("missing access token")
    return token


def reply_to(message: Any) -> dict[str, Any]:
    """The answer to one client frame."""
    if not isinstance(message, dict):
        return {"type": "error", "code": "invalid_message", "message": "expected an object"}
    kind = message.get("type")
    if kind == "ping":
        return {"type": "pong"}
    if kind == "subscribe":
        topics = message.get("topics", ["feed"])
        if not isinstance(topics, list) or any(t != "feed" for t in topics):
            return {"type": "error", "code": "unknown_topic", "message": "topics: ['feed']"}
        return {"type": "subscribed", "topics": ["feed"]}
    return {"type": "error", "code": "unknown_type", "message": f"unknown type {kind!r}"}


def build_app(
    hub: Hub,
    jwt: JwtCodec,
    idle_timeout: float,
    ready: ReadinessCheck | None = None,
    dependencies: DependencyCheck | None = None,
) -> Starlette:
    """The push app: ``/v1/stream`` and the probes.

    ``/readyz`` fails only on ``ready`` (the instance not serving); NATS away is named
    as degraded: open sockets stay open and answer pings, and are told of new feeds
    again once it is back."""

    def degraded() -> dict[str, bool]:
        return {**(dependencies() if dependencies is not None else {}), "nats": hub.ready}

    async def stream(ws: WebSocket) -> None:
        try:
            claims = jwt.verify(socket_token(ws))
        except Unauthenticated as exc:
            _log.info("push.refused", reason=exc.message)
            await ws.close(code=POLICY_VIOLATION)  # before accept: the handshake gets 403
            return
        if not hub.has_room(claims.sub):
            # Refused at the handshake (HTTP 403): too many sockets for this user, or here.
            _log.info("push.refused", reason="socket limit")
            await ws.close(code=TRY_AGAIN_LATER)
            return
        await ws.accept()
        joined = False
        try:
            await hub.join(claims.sub, ws)
            joined = True
            while True:
                # A socket lives as long as its token: the client reconnects with a new one.
                left = min(idle_timeout, claims.exp - time.time())
                if left <= 0:
                    await ws.close(POLICY_VIOLATION, "token expired")
                    return
                try:
                    message = await asyncio.wait_for(ws.receive(), left)
                except TimeoutError:
                    expired = claims.exp <= time.time()
                    await ws.close(
                        POLICY_VIOLATION if expired else GOING_AWAY,
                        "token expired" if expired else "idle",
                    )
                    return
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text") or message.get("bytes") or b""
                try:
                    parsed = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    parsed = None
                answer = reply_to(parsed)
                FRAMES.labels(answer["type"]).inc()
                await ws.send_text(orjson.dumps(answer).decode())
        except WebSocketDisconnect:
            return
        except Exception:
            _log.exception("push.socket_failed", user_id=claims.sub)
            with contextlib.suppress(Exception):
                await ws.close(1011)
        finally:
            if joined:
                await hub.leave(claims.sub, ws)

    app = Starlette(
        routes=[
            WebSocketRoute("/v1/stream", stream),
            *probe_routes(ready, dependencies=degraded),
        ]
    )
    install_error_handlers(app)
    return app


def create_service(settings: ServiceSettings) -> Service:
    """Composition root: the hub on the service's fan-out, the app on its port."""
    cfg = LearnfeedSettings.of(settings)
    service = Service(SERVICE_NAME, cfg)
    hub = Hub(service.bus, cfg.push_max_sockets_per_user, cfg.push_max_sockets)
    app = build_app(
        hub,
        cfg.jwt(),
        cfg.push_idle_timeout,
        ready=lambda: {"serving": service.serving},
        dependencies=service.dependencies,
    )
    service.add_http(app, cfg.push_port, ws_max_size=cfg.max_body_bytes)
    return service

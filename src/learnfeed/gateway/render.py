"""The public JSON of what the services answer, rendered with orjson.

Hot routes return bytes: FastAPI's per-request pydantic serialisation is several
times slower; the pydantic models in ``models.py`` still document every route.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from learnfeed.v1 import catalog_pb2, identity_pb2

JSON = "application/json"


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


def bare_item_json(item_id: str) -> bytes:
    """An item the catalog could not describe in time: its id alone (the feed's entry
    knows no more), rendered per read on a degraded page only."""
    return orjson.dumps({"id": item_id})


def scored(rendered: bytes, score: float) -> orjson.Fragment:
    """A rendered item with its score added, embedded as is by ``orjson.dumps``."""
    return orjson.Fragment(b'%s,"score":%.4f}' % (rendered[:-1], score))


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


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type=JSON)

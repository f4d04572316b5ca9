"""The public HTTP contract's schemas (they also make the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from learnfeed.contract import EMAIL_PATTERN, InteractionKind
from learnfeed.gateway.cursors import CURSOR_PATTERN


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignupBody(_Strict):
    email: str = Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)
    password: str = Field(min_length=8, max_length=256)
    name: str = Field(min_length=1, max_length=100, pattern=r"\S")  # not only spaces


class LoginBody(_Strict):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=256)


class RefreshBody(_Strict):
    refresh_token: str = Field(min_length=1, max_length=512)


class InteractionBody(_Strict):
    item_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    kind: InteractionKind


class Tokens(BaseModel):
    user_id: str
    access_token: str
    refresh_token: str
    expires_in: int


class Profile(BaseModel):
    user_id: str
    email: str
    name: str
    created_at: float
    following_count: int


class EducatorRef(BaseModel):
    id: str
    name: str


def _absent_not_null(schema: dict[str, Any]) -> None:
    # Such a field is left out, never sent as null: no "default": null in the document.
    schema.pop("default", None)


def _unless_unenriched() -> Any:
    """A field of an item that an un-enriched item leaves out (typed as when present)."""
    return Field(
        None,
        description="absent when the catalog could not describe the item in time",
        json_schema_extra=_absent_not_null,
    )


class FeedEntry(BaseModel):
    """A ranked item: `id` and `score` always; the rest only when the catalog described
    it in time (the feed's own entry knows no more)."""

    id: str
    kind: str = _unless_unenriched()
    title: str = _unless_unenriched()
    topic: str = _unless_unenriched()
    educator: EducatorRef = _unless_unenriched()
    score: float
    created_at: float = _unless_unenriched()
    duration_seconds: int = _unless_unenriched()


class ItemOut(BaseModel):
    id: str
    kind: str
    title: str
    topic: str
    educator: EducatorRef
    created_at: float
    duration_seconds: int


class FeedOut(BaseModel):
    user_id: str
    version: int
    generated_at: float
    stale: bool
    items: list[FeedEntry]
    next_cursor: str | None


class Follows(BaseModel):
    educator_ids: list[str]


class HomeOut(BaseModel):
    profile: Profile | None = None
    feed: FeedOut | None = None
    follows: Follows | None = None
    partial: list[str]


class Accepted(BaseModel):
    accepted: bool


class FeedQuery(BaseModel):
    """GET /v1/feed's query; the same model documents the route and validates it."""

    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, max_length=20, pattern=CURSOR_PATTERN)

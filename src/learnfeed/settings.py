"""learnfeed's settings: the common ones plus what its services need (``CELLWORK_*``)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from cellwork import ServiceSettings
from cellwork.data import sqlite_url
from cellwork.gateway import JwtCodec, JwtKeys
from learnfeed.contract import INTERACTION_REDELIVERY_HORIZON

DEV_JWT_KEY = "k1:learnfeed-dev-key-change-me-please"


class LearnfeedSettings(ServiceSettings):
    """Every learnfeed service reads these; each uses what concerns it."""

    model_config = SettingsConfigDict(env_prefix="CELLWORK_", extra="ignore")

    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in state_dir")
    demo: bool = Field(False, description="seed the demo catalog on start")
    jwt_keys: str = Field(DEV_JWT_KEY, description="kid:secret[,kid:secret...]")
    jwt_active_kid: str = ""
    jwt_issuer: str = "learnfeed-identity"
    jwt_audience: str = "learnfeed"
    access_token_ttl: int = Field(900, gt=0, description="seconds")
    refresh_token_ttl: int = Field(30 * 86400, gt=0, description="seconds")
    refresh_window: float = Field(10.0, gt=0, description="reads of a user within it: 1 refresh")
    refresh_id_retention: float = Field(
        86400.0, gt=0, description="seconds feed remembers an applied refresh id"
    )
    interaction_burst: int = Field(3, ge=1, description="interactions that ask for a refresh")
    recompute_interval: float = Field(6 * 3600.0, gt=0, description="seconds between passes")
    recompute_batch: int = Field(200, ge=1)
    feed_size: int = Field(100, ge=20, le=1000)
    gateway_port: int = Field(8080, ge=0, le=65535)
    push_port: int = Field(8081, ge=0, le=65535)
    rate_limit_rps: float = Field(100.0, gt=0, description="requests a second per user")
    rate_limit_burst: float = Field(200.0, ge=1)
    auth_rate_limit_rps: float = Field(
        20.0, gt=0, description="sign-up, login and refresh requests a second per client address"
    )
    auth_rate_limit_burst: float = Field(100.0, ge=1)
    max_body_bytes: int = Field(65536, ge=1024)
    part_deadline: float = Field(0.3, gt=0, description="seconds for each part of /v1/home")
    call_timeout: float = Field(2.0, gt=0, description="seconds for a gateway's upstream call")
    push_idle_timeout: float = Field(300.0, gt=0)
    push_max_sockets_per_user: int = Field(8, ge=1, description="per push instance")
    push_max_sockets: int = Field(20_000, ge=1, description="per push instance")
    catalog_cache_ttl: float = Field(300.0, gt=0)
    gateway_feed_cache: bool = Field(
        True, description="gateways keep current feed versions, dropped when one changes"
    )
    gateway_feed_cache_bytes: int = Field(
        128 * 2**20, ge=2**20, description="bytes of feed versions a gateway keeps"
    )
    gateway_items_cache_bytes: int = Field(
        64 * 2**20, ge=2**20, description="bytes of rendered items a gateway keeps"
    )
    gateway_items_cache: bool = Field(
        True, description="gateways keep the items they render (and share them through Redis)"
    )
    gateway_last_feeds_bytes: int = Field(
        32 * 2**20,
        ge=2**20,
        description="bytes of the pages a gateway last served each user (stale answers)",
    )
    gateway_enrich_timeout: float = Field(
        0.2, gt=0, description="seconds a feed page waits for the catalog, then goes un-enriched"
    )
    feed_cache_bytes: int = Field(
        192 * 2**20, ge=2**20, description="bytes of feed versions a feed instance keeps"
    )
    interactions_retention: float = Field(
        90 * 86400.0,
        description="seconds the recommender keeps an interaction (and dedupes its event id)",
    )
    interactions_stream_max_bytes: int = Field(
        1 * 2**30, ge=2**20, description="bytes the INTERACTIONS stream holds at most"
    )
    refresh_token_retention: float = Field(
        7 * 86400.0,
        ge=0,
        description="seconds a refresh-token family is kept after its last token expired",
    )
    retention_interval: float = Field(
        3600.0, gt=0, description="seconds between passes of the retention jobs"
    )

    @field_validator("interactions_retention")
    @classmethod
    def _outlives_redeliveries(cls, value: float) -> float:
        # A pruned event id would count again if its event were delivered once more.
        if value < INTERACTION_REDELIVERY_HORIZON:
            raise ValueError(
                f"must be at least {INTERACTION_REDELIVERY_HORIZON:.0f} seconds: interactions"
                " are deduped by event id for as long as an event can be redelivered"
                " (the INTERACTIONS stream's max age plus the dead-letter stream's)"
            )
        return value

    @model_validator(mode="after")
    def _enrichment_fits_a_home_part(self) -> LearnfeedSettings:
        # /v1/home's feed part reads the feed and then enriches it: an enrichment that may
        # outlast the part would drop the whole feed from the answer instead of its titles.
        if self.gateway_enrich_timeout >= self.part_deadline:
            raise ValueError(
                f"gateway_enrich_timeout ({self.gateway_enrich_timeout} s) must be below"
                f" part_deadline ({self.part_deadline} s): /v1/home's feed part enriches"
                " within its own deadline"
            )
        return self

    @classmethod
    def of(cls, settings: ServiceSettings) -> LearnfeedSettings:
        """These settings from whatever the runtime handed in."""
        if isinstance(settings, cls):
            return settings
        return cls(**settings.model_dump())

    def database(self, name: str) -> str:
        """The database URL of service ``name``."""
        return self.database_url or sqlite_url(self.state_dir, name)

    def jwt(self) -> JwtCodec:
        """The access-token codec every service shares.

        Raises ValueError when the keys are the public development key outside a
        demo cell: anyone could sign tokens with it.
        """
        if self.jwt_keys == DEV_JWT_KEY and not self.demo:
            raise ValueError(
                "CELLWORK_JWT_KEYS is the public development key: set your own "
                "(kid:secret, 32+ characters) or run a demo cell (cellwork up --demo)"
            )
        keys = JwtKeys.parse(self.jwt_keys, self.jwt_active_kid)
        return JwtCodec(
            keys, issuer=self.jwt_issuer, audience=self.jwt_audience, ttl=self.access_token_ttl
        )

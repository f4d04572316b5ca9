"""Typed settings of a service instance, from ``CELLWORK_*`` environment variables.

The supervisor passes the cell file's values to each instance as environment,
so one source of truth (pydantic-settings) reads them in a process started by
the cell, by docker compose or by Kubernetes alike.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class ServiceSettings(BaseSettings):
    """Settings every instance has; a service subclasses it for its own."""

    model_config = SettingsConfigDict(env_prefix="CELLWORK_", extra="ignore")

    service: str = Field("", description="service name; defaults to the module's service name")
    instance_id: str = Field(default_factory=_default_instance_id)
    nats_url: str = "nats://127.0.0.1:4222"
    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0: every interface)")
    advertise_host: str = Field(
        "", description="address published in the registry; defaults to host (or this host's IP)"
    )
    grpc_port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    metrics_port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    zone: str = "local"
    version: str = "dev"
    state_dir: Path = Path(".cellwork")
    registry_bucket: str = "cellwork_registry"
    config_bucket: str = Field(
        "cellwork_config", description="the key-value bucket of live settings (and faults)"
    )
    stream_replicas: int = Field(
        1, ge=1, le=5, description="copies of each stream and of the registry on a NATS cluster"
    )
    heartbeat_interval: float = Field(1.0, gt=0, description="seconds between registry puts")
    registry_ttl: float = Field(3.0, gt=0, description="seconds an entry lives without a beat")
    drain_timeout: float = Field(10.0, ge=0, description="seconds to finish in-flight calls")
    drain_propagation: float = Field(
        0.3, ge=0, description="seconds to wait after DRAINING so clients stop picking us"
    )

    def advertised(self) -> str:
        """The address other instances should dial."""
        if self.advertise_host:
            return self.advertise_host
        if self.host in ("0.0.0.0", "::", ""):
            try:
                return socket.gethostbyname(socket.gethostname())
            except OSError:
                return "127.0.0.1"
        return self.host

    redis_url: str = Field("", description="Redis for the shared cache tier; empty: none")
    log_level: str = "info"
    access_log: bool = Field(False, description="log every RPC, not only failures and slow ones")
    slow_call_seconds: float = 1.0
    event_retry_max_age: float = Field(
        300.0,
        gt=0,
        description="seconds an event failing transiently is retried before it is dead-lettered",
    )


def _only_init(
    cls: type[BaseSettings],
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
    dotenv_settings: PydanticBaseSettingsSource,
    file_secret_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    return (init_settings,)


def settings_from_env(settings_cls: type[S], environ: Mapping[str, str]) -> S:
    """The settings a process started with exactly ``environ`` reads (``os.environ`` is
    not consulted). Raises pydantic's ValidationError for a value that does not parse.

    Each field's variable is its name upper-cased behind the class's ``env_prefix``
    (case-insensitive, as pydantic-settings reads them); the values are validated as
    the environment's would be. Built on the public ``settings_customise_sources``
    hook: a subclass whose only source is the values handed in.
    """
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    names = {f"{prefix}{name}".upper(): name for name in settings_cls.model_fields}
    values = {names[key.upper()]: value for key, value in environ.items() if key.upper() in names}
    isolated = type(
        settings_cls.__name__,
        (settings_cls,),
        {"settings_customise_sources": classmethod(_only_init)},
    )
    settings: S = isolated(**values)
    return settings

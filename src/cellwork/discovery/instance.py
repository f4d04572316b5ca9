"""What the registry holds about one instance."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

_KEY_SAFE = re.compile(r"[^A-Za-z0-9_=-]")


class InstanceStatus(StrEnum):
    """Lifecycle status an instance publishes: only SERVING ones get new calls."""

    SERVING = "SERVING"
    DRAINING = "DRAINING"
    NOT_SERVING = "NOT_SERVING"


def safe_token(value: str) -> str:
    """Make ``value`` usable as one token of a registry key (no dots, no spaces)."""
    return _KEY_SAFE.sub("_", value) or "_"


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """One registered instance: where it answers and whether it takes calls."""

    service: str
    instance_id: str
    host: str
    grpc_port: int
    metrics_port: int = 0
    zone: str = "local"
    version: str = "dev"
    status: InstanceStatus = InstanceStatus.SERVING
    pid: int = 0
    started_at: float = 0.0  # unix time

    @property
    def key(self) -> str:
        """Registry key: ``<service>.<instance id>``."""
        return f"{safe_token(self.service)}.{safe_token(self.instance_id)}"

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC server."""
        return f"{self.host}:{self.grpc_port}"

    def with_status(self, status: InstanceStatus) -> InstanceInfo:
        """Return a copy with another status."""
        return replace(self, status=status)

    def to_json(self) -> bytes:
        """Serialize for the registry."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> InstanceInfo:
        """Parse a registry value; raises ValueError when it is not an instance."""
        try:
            raw = json.loads(data)
            return cls(
                service=str(raw["service"]),
                instance_id=str(raw["instance_id"]),
                host=str(raw["host"]),
                grpc_port=int(raw["grpc_port"]),
                metrics_port=int(raw.get("metrics_port", 0)),
                zone=str(raw.get("zone", "local")),
                version=str(raw.get("version", "dev")),
                status=InstanceStatus(raw.get("status", "SERVING")),
                pid=int(raw.get("pid", 0)),
                started_at=float(raw.get("started_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an instance record: {exc}") from exc

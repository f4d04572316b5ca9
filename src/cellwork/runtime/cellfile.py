"""The cell file: which services a local cell runs, how many of each, and how.

Applications ship theirs as package data and register it (``runtime.cells``).
Example::

    name: demo
    services:
      echo:
        module: cellwork.testing.echo
        replicas: 2
        env: {CELLWORK_ECHO_DELAY_MS: "0"}
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class CellFileError(ValueError):
    """The cell file is missing, not YAML, or does not match the schema."""


class ServiceSpec(BaseModel):
    """One service of the cell."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    module: str = Field(description="Python module with create_service(settings)")
    replicas: int = Field(1, ge=0, le=64)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("env", mode="before")
    @classmethod
    def _stringify(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value


class SupervisorSpec(BaseModel):
    """How the supervisor watches instances."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    health_interval: float = Field(1.0, gt=0, description="seconds between health checks")
    health_timeout: float = Field(1.0, gt=0)
    hang_timeout: float = Field(5.0, gt=0, description="failing health this long means hung")
    startup_timeout: float = Field(30.0, gt=0, description="seconds to reach SERVING")
    restart_backoff_base: float = Field(0.5, gt=0)
    restart_backoff_max: float = Field(30.0, gt=0)
    stable_after: float = Field(10.0, gt=0, description="SERVING this long resets back-off")
    stop_grace: float = Field(10.0, ge=0, description="seconds from SIGTERM to SIGKILL")

    @model_validator(mode="after")
    def _backoff_bounds(self) -> SupervisorSpec:
        # backoff() refuses a cap below its base; say so here, not in the running loop.
        if self.restart_backoff_max < self.restart_backoff_base:
            raise ValueError("restart_backoff_max must be at least restart_backoff_base")
        return self


class CellSpec(BaseModel):
    """A whole cell: its name, where it keeps state, its NATS and its services."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("cell", pattern=r"^[A-Za-z0-9_-]+$")
    state_dir: Path | None = None
    nats_url: str | None = Field(None, description="external NATS; None starts one")
    zone: str = "local"
    env: dict[str, str] = Field(default_factory=dict, description="env for every instance")
    supervisor: SupervisorSpec = SupervisorSpec()
    services: dict[str, ServiceSpec]

    def resolved_state_dir(self, base: Path) -> Path:
        """The state directory, relative paths taken from ``base``."""
        state = self.state_dir or Path(".cellwork") / self.name
        return state if state.is_absolute() else (base / state)


def load_cell(path: Path) -> CellSpec:
    """Read and validate a cell file; raises CellFileError with a readable message."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CellFileError(f"cannot read cell file {path}: {exc.strerror}") from exc
    return parse_cell(text, str(path))


def parse_cell(text: str, source: str) -> CellSpec:
    """Validate a cell file's text; ``source`` names it in the CellFileError raised."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CellFileError(f"cell file {source} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CellFileError(f"cell file {source} must be a mapping with a 'services' key")
    try:
        return CellSpec.model_validate(raw)
    except ValidationError as exc:
        raise CellFileError(f"cell file {source} is invalid:\n{exc}") from exc

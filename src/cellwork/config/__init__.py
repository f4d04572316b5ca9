"""Settings: typed from environment and the cell file."""

from cellwork.config.settings import ServiceSettings

__all__ = ["ServiceSettings"]

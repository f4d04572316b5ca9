"""Settings: typed from environment and the cell file (``settings``), and live ones,
changed while instances run, in a NATS key-value bucket (``dynamic``, ``bucket``,
``live``, ``admin``; a service declares them with ``Service.live``)."""

from cellwork.config.settings import ServiceSettings

__all__ = ["ServiceSettings"]

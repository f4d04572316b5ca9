"""Run a service in the test's own event loop, on a real NATS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cellwork.config.settings import ServiceSettings
from cellwork.service import Service

ServiceFactory = Callable[[ServiceSettings], Service]


async def start_service(
    factory: ServiceFactory,
    nats_url: str,
    *,
    settings_class: type[ServiceSettings] = ServiceSettings,
    **settings: Any,
) -> Service:
    """Build a service with ``factory`` and start it; ``settings`` override the defaults.

    Pass the service's own ``settings_class`` to set fields only it has.

    Drain or close it yourself (``await service.drain(1)``) when the test is done.
    """
    merged: dict[str, Any] = {"nats_url": nats_url, "drain_propagation": 0.05, **settings}
    service = factory(settings_class(**merged))
    try:
        await service.start()
    except BaseException:
        await service.close()
        raise
    return service

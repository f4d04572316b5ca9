"""``cellwork serve MODULE``: run one service instance until told to stop.

The module's ``create_service(settings)`` is the composition root. The first
SIGTERM or SIGINT drains (DRAINING, finish in-flight calls, deregister); a
second one exits at once.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from cellwork.config.settings import ServiceSettings
from cellwork.observability.logging import configure_logging, get_logger
from cellwork.service import Service

T = TypeVar("T")
ServiceFactory = Callable[[ServiceSettings], Service]

_log = get_logger("cellwork.serve")


def load_factory(module: str) -> ServiceFactory:
    """Import ``module`` and return its ``create_service``; raises ImportError otherwise.

    A package whose ``__init__`` does not define it is looked into: ``learnfeed.feed``
    finds ``learnfeed.feed.service.create_service``, so a package's ``__init__`` need
    not import the whole service (and everything it imports) to be servable.
    """
    mod = importlib.import_module(module)
    factory = getattr(mod, "create_service", None)
    if factory is None and hasattr(mod, "__path__"):
        try:
            factory = getattr(importlib.import_module(f"{module}.service"), "create_service", None)
        except ModuleNotFoundError as exc:
            if exc.name != f"{module}.service":
                raise
    if not callable(factory):
        raise ImportError(
            f"module {module!r} (or its .service module) has no create_service(settings) function"
        )
    return factory  # type: ignore[no-any-return]


async def run_service(service: Service) -> None:
    """Start ``service``, wait for SIGTERM/SIGINT, then drain it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            _log.warning("serve.forced_exit", signal=signum)
            os._exit(1)
        _log.info("serve.signal", signal=signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await service.start()
    except BaseException:
        await service.close()
        raise
    await stop.wait()
    await service.drain()


def run_forever(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on uvloop where available, else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


def serve(module: str) -> int:
    """Run the service of ``module`` in this process; returns the exit code."""
    settings = ServiceSettings()
    configure_logging(settings.log_level, instance=settings.instance_id)
    try:
        factory = load_factory(module)
        service = factory(settings)
    except Exception as exc:
        _log.error("serve.load_failed", module=module, error=str(exc))
        return 2
    configure_logging(settings.log_level, service=service.name, instance=settings.instance_id)
    try:
        run_forever(run_service(service))
    except Exception:
        _log.exception("serve.failed", module=module)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))

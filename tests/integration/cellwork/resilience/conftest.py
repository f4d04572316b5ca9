"""Echo instances, healthy or failing, on the test's nats-server."""

from tests.integration.cellwork.echoes import echoes

__all__ = ["echoes"]

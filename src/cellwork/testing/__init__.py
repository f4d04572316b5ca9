"""Test helpers for cellwork services: real servers, never stand-ins.

- ``NatsServer`` runs a real ``nats-server`` with JetStream on a free port.
- ``start_service`` runs a service in-process (real gRPC, real registry).
- ``cellwork.testing.pytest_plugin`` provides the ``nats_server`` and ``registry``
  fixtures: add ``pytest_plugins = ["cellwork.testing.pytest_plugin"]`` to a conftest.
- ``CellProcess`` runs a whole cell with ``cellwork up``, as a user does.
- ``cellwork.testing.echo`` is a small real service to call.
- ``cellwork.testing.driver`` drives open-loop load and records every request, and
  ``cellwork.testing.ledger`` says of every acknowledged event whether it was
  delivered, lost or doubled: the harness of fault tests (``make chaos``);
  ``cellwork.testing.capacity`` measures what a route serves (with wrk) first.
"""

from cellwork.runtime.nats_server import NatsServer, free_port
from cellwork.testing.cell import CellProcess
from cellwork.testing.services import start_service

__all__ = ["CellProcess", "NatsServer", "free_port", "start_service"]

"""RPC: grpc.aio server and client runtime with deadlines, metadata and metrics.

Generated client modules (``x_client.py``, ``make proto``) import ``Client``,
``Method`` and ``Metadata`` from here.
"""

from cellwork.rpc.client import Client, Metadata, Method, balanced_client, connect_client

__all__ = ["Client", "Metadata", "Method", "balanced_client", "connect_client"]

"""RPC: grpc.aio server and client runtime with deadlines, metadata and metrics.

Generated client modules (``x_client.py``, ``make proto``) import ``Client``,
``Fallback``, ``Method`` and ``Metadata`` from here.
"""

from cellwork.rpc.client import (
    Client,
    Fallback,
    Metadata,
    Method,
    balanced_client,
    connect_client,
)

__all__ = ["Client", "Fallback", "Metadata", "Method", "balanced_client", "connect_client"]

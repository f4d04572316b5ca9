"""A TCP fault proxy for tests: put it in front of one instance and break the network
between that instance and its callers, on purpose and while calls flow.

The vocabulary is Toxiproxy's (latency, timeout as a black hole, reset_peer,
bandwidth, slicer, limit_data; upstream and downstream; toxicity), written here on
asyncio streams because Toxiproxy, a Go program, cannot be installed on this
project's machines (no binary downloads, and no package ships it); and no Python
library offers these faults.

    async with stand_in(service.registration) as proxy:  # callers now dial the proxy
        proxy.add(Latency(200))                          # answers come 200 ms late
        ...
        proxy.remove("latency_downstream")

``stand_in`` advertises the proxy's address in the instance's registry record
(``Registration.advertise``), so balanced clients reopen their channel to the proxy;
after the block the instance's own address is published again. ``FaultProxy`` alone
forwards any ``host:port``.
"""

from cellwork.testing.faultproxy.proxy import FaultProxy, ProxyStats, stand_in
from cellwork.testing.faultproxy.toxics import (
    AddedToxic,
    Bandwidth,
    Direction,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    Timeout,
    Toxic,
)

__all__ = [
    "AddedToxic",
    "Bandwidth",
    "Direction",
    "FaultProxy",
    "Latency",
    "LimitData",
    "ProxyStats",
    "ResetPeer",
    "Slicer",
    "Timeout",
    "Toxic",
    "stand_in",
]

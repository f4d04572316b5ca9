"""Discovery: instances register in a NATS KV bucket; watchers see the live set."""

from cellwork.discovery.instance import InstanceInfo, InstanceStatus
from cellwork.discovery.registry import Registration, Registry
from cellwork.discovery.watcher import RegistryWatcher

__all__ = [
    "InstanceInfo",
    "InstanceStatus",
    "Registration",
    "Registry",
    "RegistryWatcher",
]

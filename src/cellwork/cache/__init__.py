"""cache: an in-process TTL cache with single-flight loading of many keys at once, and
a shared Redis tier behind it."""

from cellwork.cache.local import LocalCache
from cellwork.cache.shared import RedisTier, TieredCache

__all__ = ["LocalCache", "RedisTier", "TieredCache"]

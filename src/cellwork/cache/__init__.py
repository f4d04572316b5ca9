"""cache: an in-process TTL cache with single-flight loading of many keys at once."""

from cellwork.cache.local import LocalCache

__all__ = ["LocalCache"]

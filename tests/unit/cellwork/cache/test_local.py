"""The in-process cache's rules, with the clock passed in."""

from cellwork.cache import LocalCache


def test_cached_values_expire_and_the_oldest_go_first_past_maxsize() -> None:
    cache: LocalCache[str, int] = LocalCache(maxsize=2, ttl=10)
    cache.put("a", 1, now=0.0)
    cache.put("b", 2, now=0.0)
    assert cache.get("a", now=9.9) == 1
    assert cache.get("a", now=10.0) is None  # expired
    cache.put("a", 1, now=0.0)
    cache.put("c", 3, now=0.0)  # over maxsize: "b", the oldest, goes
    assert (cache.get("b", now=1.0), cache.get("a", now=1.0), cache.get("c", now=1.0)) == (
        None,
        1,
        3,
    )
    cache.invalidate("a")
    assert cache.get("a", now=1.0) is None and len(cache) == 1

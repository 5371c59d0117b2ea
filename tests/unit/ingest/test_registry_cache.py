"""The registry cache reloads periodically and on a miss, rate-limited."""

from __future__ import annotations

from cityops.catalog import Kind
from ingest.registry_cache import DeviceEntry, RegistryCache, RegistrySnapshot


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_miss_reload_is_rate_limited_and_failures_keep_the_last_copy() -> None:
    devices: dict[str, DeviceEntry] = {}
    loads = 0
    fail = False

    def loader() -> RegistrySnapshot:
        nonlocal loads
        loads += 1
        if fail:
            raise OSError("database away")
        return RegistrySnapshot(dict(devices), frozenset(), frozenset())

    clock = Clock()
    cache = RegistryCache(loader, refresh_s=60, miss_refresh_s=5, clock=clock)
    cache.reload()
    assert cache.lookup("A") is None
    assert loads == 1  # a miss right after a load does not reload
    devices["A"] = DeviceEntry(Kind.HEATING, None, "in_service")
    clock.now = 3
    assert cache.lookup("A") is None
    assert loads == 1
    clock.now = 6
    assert cache.lookup("A") == devices["A"]
    assert loads == 2
    assert cache.lookup("B") is None
    assert loads == 2
    fail = True
    clock.now = 100  # periodic reload fails: the last copy stays
    assert cache.lookup("A") == devices["A"]
    cache.add("C", DeviceEntry(Kind.CHARGER, None, "in_service"))
    assert cache.lookup("C") is not None

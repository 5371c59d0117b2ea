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


def test_a_refresh_reads_the_registry_only_when_its_counter_moved() -> None:
    devices: dict[str, DeviceEntry] = {"A": DeviceEntry(Kind.HEATING, None, "in_service")}
    version = 7
    loads = probes = 0

    def loader() -> RegistrySnapshot:
        nonlocal loads
        loads += 1
        return RegistrySnapshot(dict(devices), frozenset(), frozenset(), version=version)

    def probe() -> int:
        nonlocal probes
        probes += 1
        return version

    clock = Clock()
    cache = RegistryCache(loader, refresh_s=60, miss_refresh_s=5, clock=clock, version=probe)
    cache.reload()
    assert (loads, cache.reloads) == (1, 1)
    clock.now = 61  # periodic refresh, counter unchanged: asked, not read
    assert cache.lookup("A") is not None
    assert (loads, probes) == (1, 1)
    clock.now = 70  # a miss, counter unchanged: an unknown device is still unknown
    assert cache.lookup("B") is None
    assert (loads, probes) == (1, 2)
    clock.now = 71  # within the refresh period: not even asked
    assert cache.lookup("A") is not None
    assert probes == 2
    devices["B"] = DeviceEntry(Kind.CHARGER, None, "in_service")
    version = 8
    clock.now = 76  # a miss after the registry changed: read
    assert cache.lookup("B") == devices["B"]
    assert (loads, probes, cache.reloads) == (2, 3, 2)


def test_without_a_counter_every_refresh_reads() -> None:
    loads = 0

    def loader() -> RegistrySnapshot:
        nonlocal loads
        loads += 1
        return RegistrySnapshot({}, frozenset(), frozenset())  # no version: an old schema

    clock = Clock()
    cache = RegistryCache(loader, refresh_s=60, clock=clock, version=lambda: 1)
    cache.reload()
    clock.now = 61
    cache.lookup("A")
    assert loads == 2

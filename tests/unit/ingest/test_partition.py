"""Partitioned decoding (ingest scale-out with area affinity), without services."""

from __future__ import annotations

import json
import zlib

import pytest

from cityops.catalog import Kind
from cityops.settings import IngestSettings
from ingest.batcher import PendingBatch
from ingest.client import subscription_filters
from ingest.decode import Decoder, Reason
from ingest.partition import Partition, partition_of
from ingest.registry_cache import DeviceEntry, RegistryCache, RegistrySnapshot

RECV = 1_735_689_600_000
AREAS = [f"CY-{i:02d}" for i in range(12)]


def _registry() -> RegistryCache:
    devices = {
        f"SL-{i}": DeviceEntry(Kind.STREETLIGHT, "GW-1", "in_service", AREAS[i]) for i in range(12)
    }
    snap = RegistrySnapshot(devices, frozenset({"GW-1"}), frozenset(AREAS))
    cache = RegistryCache(lambda: snap)
    cache.reload()
    return cache


def _decode_all(partitions: int, topic: str, payload: bytes) -> list[PendingBatch]:
    registry = _registry()
    out = []
    for i in range(partitions):
        batch = PendingBatch()
        Decoder(registry, partition=Partition(i, partitions)).decode(topic, payload, RECV, batch)
        out.append(batch)
    return out


def test_partition_of_is_crc32_and_stable() -> None:
    assert partition_of("CY-01", 4) == zlib.crc32(b"CY-01") % 4
    assert {partition_of(a, 3) for a in AREAS} == {0, 1, 2}
    with pytest.raises(ValueError, match="does not exist"):
        Partition(2, 2)


def test_gateway_message_is_split_by_device_area() -> None:
    body = {f"SL-{i}": [{"ts": RECV - 1000, "values": {"power_state": "on"}}] for i in range(12)}
    batches = _decode_all(3, "cityops/v1/gateway/GW-1/telemetry", json.dumps(body).encode())
    kept = [{row[0] for row in b.readings.get(Kind.STREETLIGHT, [])} for b in batches]
    assert set().union(*kept) == set(body)
    assert sum(len(k) for k in kept) == 12  # every device in exactly one partition
    for i, devices in enumerate(kept):
        assert all(partition_of(AREAS[int(d[3:])], 3) == i for d in devices)
        assert batches[i].skipped == 12 - len(devices)


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("cityops/v1/streetlight/SL-1/telemetry", b"{nope", Reason.MALFORMED_JSON),
        ("cityops/v1/lamp/SL-1/telemetry", b"{}", Reason.BAD_TOPIC),
        ("cityops/v1/streetlight/SL-404/telemetry", b'{"values": {}}', Reason.UNKNOWN_DEVICE),
        ("cityops/v1/gateway/GW-1/telemetry", b"[1]", Reason.VALIDATION),
    ],
)
def test_a_rejected_message_is_dead_lettered_by_one_partition(
    topic: str, payload: bytes, reason: Reason
) -> None:
    batches = _decode_all(4, topic, payload)
    dead = [d for b in batches for d in b.dead_letters]
    assert [d.reason for d in dead] == [reason]
    assert sum(b.skipped for b in batches) == 3


def test_partitioned_workers_join_their_own_groups() -> None:
    assert subscription_filters("cityops/v1", "ingest", partition=1, partitions=2)[0] == (
        "$share/ingest-1/cityops/v1/+/+/telemetry"
    )
    assert subscription_filters("cityops/v1", "ingest")[0] == (
        "$share/ingest/cityops/v1/+/+/telemetry"
    )
    with pytest.raises(ValueError, match="partition 3 does not exist"):
        IngestSettings(partitions=2, partition=3)

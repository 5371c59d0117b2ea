"""Scale-out: two ingest workers with device (area) affinity under load, real broker and database.

The affinity scheme (docs/scaling.md): worker i of N joins its own shared group
``$share/ingest-<i>/...``, receives every message and keeps the areas of its partition. The test
publishes a few thousand readings from devices spread over many areas, directly and through
gateways whose messages mix devices of several areas, and checks: nothing lost, nothing stored
twice, every reading of a device handed on by the same single worker (the one its area maps
to), and dead letters written once. A contrast test shows why: mosquitto's plain shared
subscription splits one device's readings between the workers.
"""

from __future__ import annotations

import json
import signal
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from cityops.batch import CommittedBatch
from ingest.partition import partition_of
from tests.conftest import free_port
from tests.integration.ingest.conftest import (
    Publisher,
    Runner,
    SecureBroker,
    ingest_env,
    start_ingest_process,
    wait_for,
)
from tests.integration.ingest.test_ingest_failures import wait_ready

pytestmark = [pytest.mark.pg, pytest.mark.mqtt]

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
DIRECT = {"SL-1": "streetlight", "HT-1": "heating", "CH-1": "charger", "MH-1": "manhole"}
VALUES = {
    "streetlight": {"power_state": "on"},
    "heating": {"temperature_c": 20.5},
    "charger": {"status": "Available"},
    "manhole": {"tilt_deg": 0.5},
}
GATEWAY_DEVICES = 40  # per gateway
ROUNDS = 30  # gateway messages per gateway, each carrying one reading of each of its devices
DIRECT_MESSAGES = 100  # per direct device


class Recorder:
    """A batch consumer that remembers which (device, ts) this worker handed on."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def on_batch(self, batch: CommittedBatch) -> None:
        """Record every newly stored reading of the batch."""
        with self._lock:
            for kb in batch.readings.values():
                self.keys.extend(zip(kb.device_ids.tolist(), kb.ts_ms.tolist(), strict=True))

    def devices(self) -> set[str]:
        """Devices this worker handled."""
        return {d for d, _ in self.keys}


def _register_fleet(dsn: str) -> dict[str, str]:
    """Spread the direct devices over areas and add gateway devices in many areas.

    Returns device id -> area code for every device that will publish.
    """
    with psycopg.connect(dsn) as conn:
        areas = [r[0] for r in conn.execute("SELECT code FROM areas ORDER BY code")]
        assert len(areas) >= 20
        placed: dict[str, str] = {}
        for i, device in enumerate(DIRECT):
            area = areas[(i * 7) % len(areas)]
            conn.execute("UPDATE devices SET area_code = %s WHERE device_id = %s", (area, device))
            placed[device] = area
        for g, gateway in enumerate(("GW-1", "GW-2")):
            for i in range(GATEWAY_DEVICES):
                device = f"SC-{g}-{i:03d}"
                area = areas[(g * GATEWAY_DEVICES + i) % len(areas)]
                conn.execute(
                    "INSERT INTO devices (device_id, kind, area_code, gateway_id) "
                    "VALUES (%s, 'streetlight', %s, %s)",
                    (device, area, gateway),
                )
                placed[device] = area
    # both partitions must own something, or the test would not test affinity
    assert {partition_of(a, 2) for a in placed.values()} == {0, 1}
    return placed


def _publish_load(publishers: Callable[..., Publisher]) -> tuple[set[tuple[str, int]], int]:
    """Publish the load (QoS 1, waiting for every PUBACK); return the keys and message count."""
    keys: set[tuple[str, int]] = set()
    messages = 0
    pubs = {name: publishers(name) for name in (*DIRECT, "GW-1", "GW-2")}
    infos = []
    for r in range(max(ROUNDS, DIRECT_MESSAGES)):
        ts = T0 + r * 60_000
        if r < ROUNDS:
            for g, gateway in enumerate(("GW-1", "GW-2")):
                body: dict[str, list[dict[str, object]]] = {}
                for i in range(GATEWAY_DEVICES):
                    device = f"SC-{g}-{i:03d}"
                    body[device] = [{"ts": ts, "values": VALUES["streetlight"]}]
                    keys.add((device, ts))
                if r == 0:  # an unregistered device in a gateway message: one dead letter each
                    body["SC-UNKNOWN"] = [{"ts": ts, "values": VALUES["streetlight"]}]
                topic = f"cityops/v1/gateway/{gateway}/telemetry"
                infos.append(pubs[gateway].publish(topic, json.dumps(body), wait=False))
                messages += 1
        if r < DIRECT_MESSAGES:
            for device, kind in DIRECT.items():
                payload = json.dumps({"ts": ts, "values": VALUES[kind]})
                topic = f"cityops/v1/{kind}/{device}/telemetry"
                infos.append(pubs[device].publish(topic, payload, wait=False))
                keys.add((device, ts))
                messages += 1
    # a malformed message: exactly one of the workers dead-letters it
    infos.append(pubs["SL-1"].publish("cityops/v1/streetlight/SL-1/telemetry", b"{not json"))
    messages += 1
    for info in infos:
        info.wait_for_publish(30)
    return keys, messages


def _stored(dsn: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    with psycopg.connect(dsn) as conn:
        for kind in VALUES:
            out += [
                (d, int(ms))
                for d, ms in conn.execute(
                    f"SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint "
                    f"FROM {kind}_readings"
                )
            ]
    return out


def test_two_partitioned_workers_keep_device_affinity(
    runner: Runner, publishers: Callable[..., Publisher]
) -> None:
    placed = _register_fleet(runner.dsn)
    recorders = [Recorder(), Recorder()]
    workers = [
        runner.start(
            f"ingest-p{i}",
            subscription_group="ingest",
            partitions=2,
            partition=i,
            consumers=[recorders[i]],
        )
        for i in range(2)
    ]
    keys, messages = _publish_load(publishers)
    assert len(keys) > 2000

    assert wait_for(lambda: len(_stored(runner.dsn)) >= len(keys), 90)
    assert wait_for(
        lambda: all(w.metrics.messages._value.get() >= messages for w in workers), 30
    ), [w.metrics.messages._value.get() for w in workers]
    stored = _stored(runner.dsn)
    # no loss and no duplicates
    assert len(stored) == len(set(stored)) == len(keys)
    assert set(stored) == keys
    # every row was written by exactly one worker (no redundant writes turned into no-ops)
    written = sum(w.rows_committed for w in workers)
    assert written == len(keys)
    assert all(w.metrics.duplicates.labels("streetlight")._value.get() == 0 for w in workers)
    # each worker received every message and left the other partition's share
    for w in workers:
        assert w.metrics.messages._value.get() == messages
        assert w.metrics.partition_skipped._value.get() > 0
    # affinity: each device handled by exactly one worker, the one its area maps to
    handed_on = recorders[0].keys + recorders[1].keys
    assert sorted(handed_on) == sorted(keys)
    by_device: dict[str, set[int]] = defaultdict(set)
    for i, rec in enumerate(recorders):
        for device in rec.devices():
            by_device[device].add(i)
    assert set(by_device) == set(placed)
    for device, handled in by_device.items():
        assert handled == {partition_of(placed[device], 2)}, device
    assert recorders[0].devices()
    assert recorders[1].devices()
    # dead letters were written once, not once per worker
    with psycopg.connect(runner.dsn) as conn:
        dead = sorted(conn.execute("SELECT topic, reason FROM dead_letters").fetchall())
    assert dead == [
        ("cityops/v1/gateway/GW-1/telemetry", "unknown device"),  # SC-UNKNOWN, once per gateway
        ("cityops/v1/gateway/GW-2/telemetry", "unknown device"),
        ("cityops/v1/streetlight/SL-1/telemetry", "malformed json"),
    ]


def test_plain_shared_subscription_splits_devices_between_workers(
    runner: Runner, publishers: Callable[..., Publisher]
) -> None:
    """Why affinity is needed: round-robin shares one device's readings between workers."""
    placed = _register_fleet(runner.dsn)
    recorders = [Recorder(), Recorder()]
    for i in range(2):
        runner.start(f"ingest-rr{i}", subscription_group="ingest", consumers=[recorders[i]])
    keys, _ = _publish_load(publishers)
    assert wait_for(lambda: len(_stored(runner.dsn)) >= len(keys), 90)
    assert sorted(recorders[0].keys + recorders[1].keys) == sorted(keys)
    shared = recorders[0].devices() & recorders[1].devices()
    # round-robin over 30 messages per gateway puts both workers on (nearly) every device
    assert len(shared) >= len(placed) // 2, len(shared)


def test_partitioned_worker_runs_stream_and_alerts_on_its_areas(
    ingest_db: str, secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """A partitioned `cityops ingest` runs the stream core and the alert engine on its areas.

    What they keep is checked in tests/integration/test_partitioned_stages.py; here the
    process starts with both in process, becomes ready and stops cleanly on SIGTERM.
    """
    port = free_port()
    env = ingest_env(
        ingest_db, secure_broker, "ingest-p1", partitions=2, partition=1, http_port=port
    )
    log = tmp_path / "ingest.log"
    proc = start_ingest_process(env, log)
    try:
        wait_ready(port, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text
    assert "alert_engine_started" in text

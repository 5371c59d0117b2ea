"""Live per-area snapshots reach a real broker on cityops/v1/live/{area}."""

from __future__ import annotations

import queue
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityops.batch import CommittedBatch, KindBatch, StatusChange
from cityops.catalog import Kind
from cityops.settings import MqttSettings, Settings
from stream.live import LiveRates, mqtt_publisher
from stream.registry import AreaIndex, DeviceIndex

pytestmark = pytest.mark.mqtt


def test_snapshots_are_published_per_area(mqtt_broker) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        mqtt=MqttSettings(
            host=mqtt_broker.host, port=mqtt_broker.port, client_id=f"t-{uuid.uuid4().hex[:8]}"
        )
    )
    areas = AreaIndex.build(["CY-JW", "CY-CW"])
    chargers = DeviceIndex.build(Kind.CHARGER, ["C1", "C2", "C3"], [0, 0, 1])
    now = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
    t = int(now.timestamp() * 1000)

    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
    sub.on_message = lambda _c, _u, msg: got.put((msg.topic, msg.payload))
    sub.connect(mqtt_broker.host, mqtt_broker.port)
    sub.subscribe("cityops/v1/live/#", qos=1)
    sub.loop_start()
    publish, close = mqtt_publisher(settings)
    try:
        live = LiveRates(
            settings,
            areas,
            {Kind.CHARGER: chargers},
            publish=publish,
            clock=lambda: t / 1000 + 35 * 60,  # 11:05: hour 10 is the last complete one
        )
        rows = [
            ("C1", t - 20 * 60_000, t, {"status": "Charging"}),
            ("C1", t - 10 * 60_000, t, {"status": "Charging"}),
            ("C2", t - 10 * 60_000, t, {"status": "Faulted"}),
        ]
        will = StatusChange(
            device_id="C2", kind=Kind.CHARGER, online=False, ts=now - timedelta(minutes=9)
        )
        live.on_batch(
            CommittedBatch(
                seq=1,
                committed_at=now,
                readings={Kind.CHARGER: KindBatch.from_rows(Kind.CHARGER, rows)},
                status_changes=[will],
            )
        )
        live.flush()
        seen: dict[str, dict[str, object]] = {}
        while len(seen) < 2:
            topic, payload = got.get(timeout=10)
            seen[topic] = orjson.loads(payload)
    finally:
        close()
        sub.loop_stop()
        sub.disconnect()
    jw = seen["cityops/v1/live/CY-JW"]
    assert jw["area"] == "CY-JW"
    # The snapshot reports the last complete hour (10:00-11:00), not the hour in progress.
    assert jw["hour"] == int(now.replace(minute=0).timestamp() * 1000)
    rates = jw["rates"]
    assert isinstance(rates, dict)
    # Hour 10:00-11:00: C1 charging 10:10-10:35 (the last report holds 15'), C2 faulted
    # 10:20-10:35; 2 connectors. At 11:05 C1 has been silent for more than 3 x 2' intervals
    # and C2 sent its last will at 10:21: both offline.
    assert rates["charger_utilization"] == pytest.approx(25 / 120)
    assert rates["charger_availability"] == pytest.approx(25 / 120)
    assert rates["charger_online"] == pytest.approx(40 / 120)
    assert jw["sensors"] == {"charger": {"in_service": 2, "offline": 2, "flatlined": 0}}
    cw = seen["cityops/v1/live/CY-CW"]
    assert cw["sensors"] == {"charger": {"in_service": 1, "offline": 1, "flatlined": 0}}


@pytest.mark.pg
def test_start_live_wires_database_and_broker(migrated_db: str, mqtt_broker) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    from cityops.settings import DatabaseSettings, StreamSettings
    from stream.live import start_live
    from tests.integration.stream import fleet

    with psycopg.connect(migrated_db) as conn:
        fleet.register(conn)
    settings = Settings(
        db=DatabaseSettings(dsn=migrated_db),
        mqtt=MqttSettings(
            host=mqtt_broker.host, port=mqtt_broker.port, client_id=f"t-{uuid.uuid4().hex[:8]}"
        ),
        stream=StreamSettings(publish_interval_s=0.2),
    )
    got: queue.Queue[str] = queue.Queue()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
    sub.on_message = lambda _c, _u, msg: got.put(msg.topic)
    sub.connect(mqtt_broker.host, mqtt_broker.port)
    sub.subscribe("cityops/v1/live/CY-SJ", qos=1)
    sub.loop_start()
    try:
        live, stop = start_live(settings)
        t = int(datetime(2026, 1, 20, 12, tzinfo=UTC).timestamp() * 1000)
        rows = [
            ("HT-2-0", t, t, {"temperature_c": 17.0}),
            ("HT-2-1", t, t, {"temperature_c": 21.0}),
        ]
        live.on_batch(
            CommittedBatch(
                seq=1,
                committed_at=datetime.now(UTC),
                readings={Kind.HEATING: KindBatch.from_rows(Kind.HEATING, rows)},
            )
        )
        assert got.get(timeout=10) == "cityops/v1/live/CY-SJ"  # the thread publishes
        stop()
    finally:
        sub.loop_stop()
        sub.disconnect()
    with psycopg.connect(migrated_db) as conn:
        num, den = conn.execute(
            "SELECT numerator, denominator FROM rates_hourly WHERE area_code = 'CY-SJ'"
            " AND metric = 'room_temp_compliance' AND hour = '2026-01-20 12:00+00'"
        ).fetchone()  # type: ignore[misc]
    assert (num, den) == (60.0, 120.0)

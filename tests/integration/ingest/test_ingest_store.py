"""Every payload shape of the contract, stored once per reading, with bad input dead-lettered."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from cityops.batch import CommittedBatch
from cityops.catalog import Kind
from stream.registry import load_areas, load_devices
from tests.integration.ingest.conftest import (
    HOTLINE_PASSWORD,
    Publisher,
    Runner,
    count,
    wait_for,
)

pytestmark = [pytest.mark.pg, pytest.mark.mqtt]

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def _rows(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, args).fetchall()


class Collect:
    """A batch consumer that keeps what it is given."""

    def __init__(self) -> None:
        self.batches: list[CommittedBatch] = []

    def on_batch(self, batch: CommittedBatch) -> None:
        self.batches.append(batch)


def test_each_kind_and_shape_is_stored(
    runner: Runner, publishers: Callable[..., Publisher]
) -> None:
    collected = Collect()
    runner.start(consumers=[collected])
    dsn = runner.dsn

    # one reading, RFC 3339 ts
    publishers("SL-1").publish(
        "cityops/v1/streetlight/SL-1/telemetry",
        json.dumps(
            {
                "ts": "2025-01-01T08:00:00+08:00",
                "values": {"power_state": "on", "illuminance_level": 0.8, "power_w": 95.5},
            }
        ),
    )
    # a list of readings, epoch ms
    publishers("MH-1").publish(
        "cityops/v1/manhole/MH-1/telemetry",
        json.dumps(
            [
                {"ts": T0 + i * 1000, "values": {"tilt_deg": 1.5 * i, "cover_open": i == 2}}
                for i in range(3)
            ]
        ),
    )
    # the gateway shape: two devices behind GW-1, of two kinds
    publishers("GW-1").publish(
        "cityops/v1/gateway/GW-1/telemetry",
        json.dumps(
            {
                "SL-2": [{"ts": T0, "values": {"power_state": "off"}}],
                "HT-2": [
                    {"ts": T0, "values": {"temperature_c": 19.5, "humidity_pct": 40}},
                    {"ts": T0 + 60_000, "values": {"temperature_c": 17.0}},
                ],
            }
        ),
    )
    # a reading without ts takes the receive time
    before = datetime.now(UTC)
    publishers("CH-1").publish(
        "cityops/v1/charger/CH-1/telemetry",
        json.dumps({"values": {"status": "Charging", "power_kw": 7.2, "session_id": "tx-9"}}),
    )
    # status (birth and last will)
    publishers("HT-1").publish(
        "cityops/v1/heating/HT-1/status", json.dumps({"online": True, "ts": T0})
    )
    publishers("HT-1").publish(
        "cityops/v1/heating/HT-1/status", json.dumps({"online": False, "ts": T0 + 5000})
    )
    # complaints: a list, then the same complaint again (stored once)
    hotline = publishers("cityops-hotline", HOTLINE_PASSWORD)
    complaint = {
        "complaint_id": "C-1",
        "received_at": "2025-01-02T09:30:00+08:00",
        "category": "heating",
        "text": "家里不热",
    }
    hotline.publish(
        "cityops/v1/hotline/12345/complaints",
        json.dumps([complaint, {**complaint, "complaint_id": "C-2", "received_at": T0}]),
    )
    hotline.publish("cityops/v1/hotline/12345/complaints", json.dumps(complaint))

    assert wait_for(
        lambda: (
            count(dsn, "SELECT count(*) FROM complaints") == 2
            and count(dsn, "SELECT count(*) FROM device_status_events") == 2
            and count(dsn, "SELECT count(*) FROM charger_readings") == 1
        )
    )
    assert wait_for(lambda: count(dsn, "SELECT count(*) FROM heating_readings") == 2)

    assert _rows(
        dsn,
        "SELECT device_id, ts, power_state, illuminance_level, power_w FROM "
        "streetlight_readings ORDER BY device_id",
    ) == [
        ("SL-1", datetime(2025, 1, 1, tzinfo=UTC), "on", 0.8, 95.5),
        ("SL-2", datetime(2025, 1, 1, tzinfo=UTC), "off", None, None),
    ]
    assert _rows(dsn, "SELECT tilt_deg, cover_open FROM manhole_readings ORDER BY ts") == [
        (0.0, False),
        (1.5, False),
        (3.0, True),
    ]
    assert _rows(dsn, "SELECT temperature_c, humidity_pct FROM heating_readings ORDER BY ts") == [
        (19.5, 40.0),
        (17.0, None),
    ]
    ((status, power, session, ts, received),) = _rows(
        dsn, "SELECT status, power_kw, session_id, ts, received_at FROM charger_readings"
    )
    assert (status, power, session) == ("Charging", 7.2, "tx-9")
    assert before.replace(microsecond=0) <= ts <= datetime.now(UTC)
    assert ts <= received
    assert _rows(dsn, "SELECT device_id, kind, online FROM device_state") == [
        ("HT-1", "heating", False)
    ]
    assert _rows(
        dsn, "SELECT complaint_id, received_at, category, source FROM complaints ORDER BY 1"
    ) == [
        ("C-1", datetime(2025, 1, 2, 1, 30, tzinfo=UTC), "heating", "12345"),
        ("C-2", datetime(2025, 1, 1, tzinfo=UTC), "heating", "12345"),
    ]
    assert count(dsn, "SELECT count(*) FROM dead_letters") == 0

    # the consumers saw every stored reading once, in columnar form
    assert wait_for(lambda: sum(b.reading_count for b in collected.batches) == 8)
    seqs = [b.seq for b in collected.batches]
    assert seqs == sorted(seqs)
    per_kind: dict[str, int] = {}
    for b in collected.batches:
        for kind, kb in b.readings.items():
            per_kind[kind.value] = per_kind.get(kind.value, 0) + len(kb)
    assert per_kind == {"streetlight": 2, "manhole": 3, "heating": 2, "charger": 1}
    # each reading carries its device's position in the stream core's index (from ingest's
    # registry copy, on the direct and the gateway path alike), so the live path need not hash it
    with psycopg.connect(dsn) as conn:
        areas = load_areas(conn)
        for b in collected.batches:
            for kind, kb in b.readings.items():
                index = load_devices(conn, kind, areas)
                assert kb.positions is not None
                assert kb.positions.tolist() == index.lookup(kb.device_ids).tolist()
                assert (kb.positions >= 0).all()
    assert sorted(c["complaint_id"] for b in collected.batches for c in b.complaints) == [
        "C-1",
        "C-2",
    ]


def test_redelivered_readings_add_no_rows(
    runner: Runner, publishers: Callable[..., Publisher]
) -> None:
    runner.start()
    pub = publishers("HT-1")
    message = json.dumps(
        [{"ts": T0 + i * 60_000, "values": {"temperature_c": 20.0 + i}} for i in range(5)]
    )
    for _ in range(3):
        pub.publish("cityops/v1/heating/HT-1/telemetry", message)
    pub.publish(
        "cityops/v1/heating/HT-1/telemetry",
        json.dumps({"ts": T0 + 10 * 60_000, "values": {"temperature_c": 30.0}}),
    )
    assert wait_for(lambda: count(runner.dsn, "SELECT count(*) FROM heating_readings") == 6)
    service = runner.services[0]
    assert wait_for(lambda: service.metrics.duplicates.labels("heating")._value.get() == 10)
    assert count(runner.dsn, "SELECT count(*) FROM heating_readings") == 6


BAD_CASES = [
    # (publisher, topic, payload, reason)
    ("SL-1", "cityops/v1/streetlight/SL-1/telemetry", b"{not json", "malformed json"),
    (
        "SL-1",
        "cityops/v1/streetlight/SL-1/telemetry",
        json.dumps({"ts": T0, "values": {"power_state": "on", "power_w": "high"}}),
        "validation",
    ),
    (
        "HT-1",
        "cityops/v1/heating/HT-1/telemetry",
        json.dumps({"ts": T0, "values": {"temperature_c": 95}}),
        "validation",
    ),
    (
        "SL-NEW",
        "cityops/v1/streetlight/SL-NEW/telemetry",
        json.dumps({"ts": T0, "values": {"power_state": "on"}}),
        "unknown device",
    ),
    (
        "GW-2",
        "cityops/v1/gateway/GW-2/telemetry",
        json.dumps({"SL-2": [{"ts": T0, "values": {"power_state": "on"}}]}),
        "foreign device",
    ),
    (
        "CH-2",
        "cityops/v1/heating/CH-2/telemetry",
        json.dumps({"ts": T0, "values": {"temperature_c": 20}}),
        "kind mismatch",
    ),
    (
        "CH-2",
        "cityops/v1/charger/CH-2/telemetry",
        json.dumps({"ts": T0, "values": {"status": "Available", "session_id": "x" * 300_000}}),
        "oversized payload",
    ),
]


@pytest.mark.parametrize(
    ("user", "topic", "payload", "reason"), BAD_CASES, ids=[c[3] for c in BAD_CASES]
)
def test_bad_input_is_dead_lettered(
    runner: Runner,
    publishers: Callable[..., Publisher],
    user: str,
    topic: str,
    payload: str | bytes,
    reason: str,
) -> None:
    runner.start()
    dsn = runner.dsn
    pub = publishers(user)
    pub.publish(topic, payload)
    # a good reading from the same publisher, after the bad one, is stored
    good_topic = {
        "SL-1": "cityops/v1/streetlight/SL-1/telemetry",
        "HT-1": "cityops/v1/heating/HT-1/telemetry",
        "CH-2": "cityops/v1/charger/CH-2/telemetry",
    }.get(user)
    good = {
        "streetlight": {"power_state": "off"},
        "heating": {"temperature_c": 21.0},
        "charger": {"status": "Available"},
    }
    if good_topic:
        kind = good_topic.split("/")[2]
        pub.publish(good_topic, json.dumps({"ts": T0 + 1, "values": good[kind]}))
    assert wait_for(lambda: count(dsn, "SELECT count(*) FROM dead_letters") == 1)
    ((got_topic, got_payload, got_reason, detail),) = _rows(
        dsn, "SELECT topic, payload, reason, detail FROM dead_letters"
    )
    assert (got_topic, got_reason) == (topic, reason)
    assert detail
    if reason in ("malformed json", "oversized payload", "kind mismatch", "unknown device"):
        assert bytes(got_payload) == (payload if isinstance(payload, bytes) else payload.encode())
    if good_topic:
        table = good_topic.split("/")[2] + "_readings"
        assert wait_for(lambda: count(dsn, f"SELECT count(*) FROM {table}") == 1)
    assert runner.services[0].metrics.dead_letters.labels(reason)._value.get() == 1


def test_one_bad_reading_does_not_cost_the_good_ones(
    runner: Runner, publishers: Callable[..., Publisher]
) -> None:
    runner.start()
    dsn = runner.dsn
    publishers("GW-1").publish(
        "cityops/v1/gateway/GW-1/telemetry",
        json.dumps(
            {
                "SL-2": [
                    {"ts": T0, "values": {"power_state": "on"}},
                    {"ts": T0 + 1000, "values": {"power_state": "sideways"}},
                    {"ts": "yesterday", "values": {"power_state": "on"}},
                    {"ts": T0 + 2000, "values": {"power_state": "dimmed", "bogus": 1}},
                    {"ts": T0 + 3000, "values": {"power_state": "off"}},
                ],
                "SL-4": [{"ts": T0, "values": {"power_state": "on"}}],
                "NOPE-1": [{"ts": T0, "values": {"power_state": "on"}}],
                "SL-3": {"ts": T0, "values": {"power_state": "on"}},
            }
        ),
    )
    assert wait_for(lambda: count(dsn, "SELECT count(*) FROM dead_letters") == 5)
    assert _rows(dsn, "SELECT device_id, ts FROM streetlight_readings ORDER BY 1, 2") == [
        ("SL-2", datetime(2025, 1, 1, tzinfo=UTC)),
        ("SL-2", datetime(2025, 1, 1, 0, 0, 3, tzinfo=UTC)),
        ("SL-3", datetime(2025, 1, 1, tzinfo=UTC)),
    ]
    reasons = _rows(dsn, "SELECT reason, count(*) FROM dead_letters GROUP BY 1 ORDER BY 1")
    assert reasons == [("foreign device", 1), ("unknown device", 1), ("validation", 3)]
    # each rejected reading is stored alone, in a shape that replays on the same topic
    payloads = [
        json.loads(bytes(p))
        for (p,) in _rows(dsn, "SELECT payload FROM dead_letters WHERE reason = 'validation'")
    ]
    assert all(list(p) == ["SL-2"] and len(p["SL-2"]) == 1 for p in payloads)


def test_auto_registration_puts_unknown_devices_in_the_configured_area(
    runner: Runner, publishers: Callable[..., Publisher]
) -> None:
    area = _rows(runner.dsn, "SELECT max(code) FROM areas")[0][0]
    runner.start(auto_register=True, auto_register_area=area)
    publishers("HT-NEW").publish(
        "cityops/v1/heating/HT-NEW/telemetry",
        json.dumps({"ts": T0, "values": {"temperature_c": 18.5}}),
    )
    assert wait_for(lambda: count(runner.dsn, "SELECT count(*) FROM heating_readings") == 1)
    assert _rows(runner.dsn, "SELECT kind, area_code FROM devices WHERE device_id = 'HT-NEW'") == [
        ("heating", area)
    ]


def test_a_message_the_database_rejects_is_dead_lettered_alone(
    runner: Runner, publishers: Callable[..., Publisher]
) -> None:
    """A batch the database refuses is split; only the refused message is dead-lettered."""
    with psycopg.connect(runner.dsn) as conn:
        conn.execute(
            "ALTER TABLE heating_readings ADD CONSTRAINT not_13 CHECK (temperature_c <> 13)"
        )
    # a long batch window so the messages share one batch
    handed_on: list[CommittedBatch] = []
    runner.start(batch_max_ms=1000, consumers=[Collecting(handed_on)])
    pub = publishers("HT-1")
    pub.publish("cityops/v1/heating/HT-1/status", json.dumps({"online": True, "ts": T0}))
    for i, temp in enumerate((12.0, 13.0, 14.0)):
        pub.publish(
            "cityops/v1/heating/HT-1/telemetry",
            json.dumps({"ts": T0 + i, "values": {"temperature_c": temp}}),
        )
    assert wait_for(lambda: count(runner.dsn, "SELECT count(*) FROM dead_letters") == 1)
    # the split batch still hands its stored rows and its status report to the consumers
    assert wait_for(lambda: sum(len(b.readings.get(Kind.HEATING, ())) for b in handed_on) == 2)
    statuses = [s for b in handed_on for s in b.status_changes]
    assert [(s.device_id, s.online) for s in statuses] == [("HT-1", True)]
    assert _rows(runner.dsn, "SELECT temperature_c FROM heating_readings ORDER BY ts") == [
        (12.0,),
        (14.0,),
    ]
    ((reason, detail, payload),) = _rows(
        runner.dsn, "SELECT reason, detail, payload FROM dead_letters"
    )
    assert reason == "database rejected"
    assert "not_13" in detail
    assert json.loads(bytes(payload))["values"]["temperature_c"] == 13.0


class Collecting:
    """A consumer that keeps every batch handed to it."""

    def __init__(self, into: list[CommittedBatch]) -> None:
        self.into = into

    def on_batch(self, batch: CommittedBatch) -> None:
        self.into.append(batch)


class Failing:
    """A consumer that always raises."""

    def on_batch(self, batch: CommittedBatch) -> None:
        raise RuntimeError("consumer bug")


def test_a_failing_consumer_costs_nothing(
    runner: Runner, publishers: Callable[..., Publisher]
) -> None:
    collected = Collect()
    service = runner.start(consumers=[Failing(), collected])
    pub = publishers("HT-1")
    for i in range(3):
        pub.publish(
            "cityops/v1/heating/HT-1/telemetry",
            json.dumps({"ts": T0 + i, "values": {"temperature_c": 20.0}}),
        )
    assert wait_for(lambda: count(runner.dsn, "SELECT count(*) FROM heating_readings") == 3)
    assert wait_for(lambda: sum(b.reading_count for b in collected.batches) == 3)
    assert service.metrics.consumer_errors.labels("Failing")._value.get() >= 1
    assert service.readiness()["worker"] is True


SHAPE_CASES = {
    # kind: (direct device, device behind GW-1, values, column checked, expected value)
    "streetlight": ("SL-1", "SL-2", {"power_state": "dimmed", "voltage_v": 229.5}, "voltage_v"),
    "manhole": ("MH-1", "MH-2", {"water_level_cm": 35.5, "overflow": True}, "water_level_cm"),
    "heating": ("HT-1", "HT-2", {"temperature_c": 17.25, "battery_pct": 80}, "temperature_c"),
    "charger": ("CH-1", "CH-3", {"status": "Faulted", "error_code": "GroundFailure"}, "status"),
}


@pytest.mark.parametrize("kind", list(SHAPE_CASES))
def test_kind_from_every_shape(
    runner: Runner, publishers: Callable[..., Publisher], kind: str
) -> None:
    direct, behind, values, column = SHAPE_CASES[kind]
    runner.start()
    pub = publishers(direct)
    topic = f"cityops/v1/{kind}/{direct}/telemetry"
    pub.publish(topic, json.dumps({"ts": T0, "values": values}))  # one reading
    pub.publish(  # a list, RFC 3339 and epoch ms mixed
        topic,
        json.dumps(
            [
                {"ts": "2025-01-01T08:00:01+08:00", "values": values},
                {"ts": T0 + 2000, "values": values},
            ]
        ),
    )
    publishers("GW-1").publish(  # the gateway shape
        "cityops/v1/gateway/GW-1/telemetry",
        json.dumps({behind: [{"ts": T0 + i * 1000, "values": values} for i in range(3)]}),
    )
    table = f"{kind}_readings"
    assert wait_for(lambda: count(runner.dsn, f"SELECT count(*) FROM {table}") == 6)
    rows = _rows(runner.dsn, f"SELECT device_id, ts, {column} FROM {table} ORDER BY 1, 2")
    expected = values[column]
    assert rows == [
        (device, datetime(2025, 1, 1, 0, 0, i, tzinfo=UTC), expected)
        for device in sorted((direct, behind))
        for i in range(3)
    ]
    assert count(runner.dsn, "SELECT count(*) FROM dead_letters") == 0

"""Bad bytes, NUL characters, conflicting complaints and replay failures: nothing lost or hidden.

These run the decoder and the writer against a real database without a broker, so each case is
one message in, one committed batch out.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from ingest.batcher import PendingBatch
from ingest.deadletters import replay
from ingest.decode import Decoder, Reason
from ingest.registry_cache import RegistryCache, load_snapshot
from ingest.writer import WriteResult, prepare_connection, write_batch
from tests.integration.ingest.conftest import DEVICES

pytestmark = [pytest.mark.pg]

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
RECV = T0 + 60_000
HT1 = "cityops/v1/heating/HT-1/telemetry"
GW1 = "cityops/v1/gateway/GW-1/telemetry"
HOTLINE = "cityops/v1/hotline/12345/complaints"


@pytest.fixture
def ingest_conn(ingest_db: str) -> Any:
    """A connection to a migrated database with the test devices, staging tables prepared."""
    with psycopg.connect(ingest_db, options="-c TimeZone=UTC") as conn:
        prepare_connection(conn)
        yield conn


def _decoder(conn: psycopg.Connection[Any]) -> Decoder:
    dsn = conn.info.dsn

    def load() -> Any:
        with psycopg.connect(dsn) as c:
            return load_snapshot(c)

    cache = RegistryCache(load)
    cache.reload()
    return Decoder(cache)


def _ingest(conn: psycopg.Connection[Any], topic: str, payload: bytes) -> WriteResult:
    batch = PendingBatch()
    _decoder(conn).decode(topic, payload, RECV, batch)
    return write_batch(conn, batch)


def _dead_letters(conn: psycopg.Connection[Any]) -> list[tuple[str, str, bytes]]:
    rows = conn.execute("SELECT reason, detail, payload FROM dead_letters ORDER BY id").fetchall()
    conn.commit()
    return [(r, d, bytes(p)) for r, d, p in rows]


def _one(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    conn.commit()
    assert row is not None
    return row[0]


def test_nul_in_a_values_key_is_a_validation_and_the_good_reading_is_stored(
    ingest_conn: psycopg.Connection[Any],
) -> None:
    payload = (
        b'[{"ts": %d, "values": {"temperature_c": 21.5}},'
        b' {"ts": %d, "values": {"temp\\u0000": 1}}]' % (T0, T0 + 1000)
    )
    _ingest(ingest_conn, HT1, payload)
    assert _one(ingest_conn, "SELECT count(*) FROM heating_readings") == 1
    ((reason, detail, stored),) = _dead_letters(ingest_conn)
    assert reason == Reason.VALIDATION
    assert "temp\\u0000" in detail
    assert "\x00" not in detail
    # the rejected reading is kept as JSON that decodes to exactly what was sent
    assert json.loads(stored) == {"ts": T0 + 1000, "values": {"temp\x00": 1}}


def test_nul_in_a_reading_key_and_in_a_gateway_device_id(
    ingest_conn: psycopg.Connection[Any],
) -> None:
    payload = (
        b'{"SL-2": [{"ts": %d, "values": {"power_state": "on"}}, {"ts": %d, "x\\u0000": 1}],'
        b' "SL-3\\u0000": [{"ts": %d, "values": {"power_state": "on"}}]}' % (T0, T0, T0)
    )
    _ingest(ingest_conn, GW1, payload)
    assert _one(ingest_conn, "SELECT count(*) FROM streetlight_readings") == 1
    letters = _dead_letters(ingest_conn)
    assert sorted(r for r, _, _ in letters) == [Reason.UNKNOWN_DEVICE, Reason.VALIDATION]
    assert all("\x00" not in d for _, d, _ in letters)
    assert {"SL-3\x00"} <= {k for _, _, p in letters for k in json.loads(p)}


def test_nul_in_a_complaint_key_and_text(ingest_conn: psycopg.Connection[Any]) -> None:
    good = {"complaint_id": "C-1", "received_at": T0, "category": "heating", "text": "cold"}
    payload = json.dumps(
        [
            good,
            {"complaint_id": "C-2", "received_at": T0, "category": "heating", "te\x00xt": "x"},
            {"complaint_id": "C-3", "received_at": T0, "category": "heating", "text": "a\x00b"},
        ]
    ).encode()
    assert b"\\u0000" in payload
    result = _ingest(ingest_conn, HOTLINE, payload)
    assert result.complaints_stored == ["C-1"]
    letters = _dead_letters(ingest_conn)
    assert [r for r, _, _ in letters] == [Reason.VALIDATION, Reason.VALIDATION]
    assert "te\\u0000xt" in letters[0][1]
    assert letters[1][1].startswith("text:")
    assert "NUL" in letters[1][1]


def test_replay_of_a_legacy_nul_dead_letter_stores_the_good_part(
    ingest_conn: psycopg.Connection[Any],
) -> None:
    """A dead letter saved whole as 'database rejected' before the fix replays cleanly."""
    payload = (
        b'[{"ts": %d, "values": {"temperature_c": 21.5}},'
        b' {"ts": %d, "values": {"temp\\u0000": 1}}]' % (T0, T0 + 1000)
    )
    dl_id = _one(
        ingest_conn,
        "INSERT INTO dead_letters (topic, payload, reason, detail) "
        "VALUES (%s, %s, 'database rejected', 'invalid byte sequence') RETURNING id",
        HT1,
        payload,
    )
    (outcome,) = replay(ingest_conn, _decoder(ingest_conn), [dl_id])
    assert not outcome.stored
    assert outcome.result.startswith("rejected again: validation")
    assert "partly stored: 1 new reading" in outcome.result
    assert _one(ingest_conn, "SELECT count(*) FROM heating_readings") == 1
    assert _one(ingest_conn, "SELECT replay_result FROM dead_letters WHERE id = %s", dl_id) == (
        outcome.result
    )


def test_replay_records_a_database_refusal(ingest_conn: psycopg.Connection[Any]) -> None:
    ingest_conn.execute(
        "ALTER TABLE heating_readings ADD CONSTRAINT not_13 CHECK (temperature_c <> 13)"
    )
    ingest_conn.commit()
    dl_id = _one(
        ingest_conn,
        "INSERT INTO dead_letters (topic, payload, reason, detail) "
        "VALUES (%s, %s, 'database rejected', 'not_13') RETURNING id",
        HT1,
        b'{"ts": %d, "values": {"temperature_c": 13}}' % T0,
    )
    (outcome,) = replay(ingest_conn, _decoder(ingest_conn), [dl_id])
    assert not outcome.stored
    assert outcome.result.startswith("rejected again: database rejected:")
    assert "not_13" in outcome.result
    assert _one(ingest_conn, "SELECT replay_result FROM dead_letters WHERE id = %s", dl_id) == (
        outcome.result
    )


# --- complaints ----------------------------------------------------------------------------------


def _complaint(**kw: Any) -> bytes:
    record = {"complaint_id": "C-7", "received_at": T0, "category": "heating", "text": "cold"}
    record.update(kw)
    return json.dumps(record).encode()


def test_a_repeated_complaint_with_other_content_is_a_conflict(
    ingest_conn: psycopg.Connection[Any],
) -> None:
    assert _ingest(ingest_conn, HOTLINE, _complaint()).complaints_stored == ["C-7"]
    # the same record again (a redelivery): a duplicate, nothing dead-lettered
    assert _ingest(ingest_conn, HOTLINE, _complaint()).complaints_stored == []
    assert _dead_letters(ingest_conn) == []
    # same id, other text, other source: a conflict with both versions visible
    _ingest(ingest_conn, "cityops/v1/hotline/web/complaints", _complaint(text="no hot water"))
    ((reason, detail, payload),) = _dead_letters(ingest_conn)
    assert reason == Reason.CONFLICT
    assert "C-7" in detail
    assert "'cold'" in detail
    assert "'no hot water'" in detail
    assert "source" in detail
    assert json.loads(payload)["text"] == "no hot water"
    assert _one(ingest_conn, "SELECT text FROM complaints WHERE complaint_id = 'C-7'") == "cold"


def test_a_complaint_with_a_device_gets_the_devices_area(
    ingest_conn: psycopg.Connection[Any],
) -> None:
    area = _one(ingest_conn, "SELECT area_code FROM devices WHERE device_id = 'HT-1'")
    assert area is not None
    assert _ingest(ingest_conn, HOTLINE, _complaint(device_id="HT-1")).complaints_stored == ["C-7"]
    assert _one(ingest_conn, "SELECT area_code FROM complaints WHERE complaint_id = 'C-7'") == area


def test_coordinates_outside_the_district_are_refused(
    ingest_conn: psycopg.Connection[Any],
) -> None:
    lat, lon = _one(ingest_conn, "SELECT array[avg(lat), avg(lon)] FROM areas")
    inside = _complaint(complaint_id="C-in", lat=lat, lon=lon)
    assert _ingest(ingest_conn, HOTLINE, inside).complaints_stored == ["C-in"]
    shanghai = _complaint(complaint_id="C-sh", lat=31.23, lon=121.47)
    assert _ingest(ingest_conn, HOTLINE, shanghai).complaints_stored == []
    ((reason, detail, _),) = _dead_letters(ingest_conn)
    assert reason == Reason.VALIDATION
    assert detail.startswith("lat/lon:")
    assert "outside" in detail


def test_test_devices_are_registered(ingest_conn: psycopg.Connection[Any]) -> None:
    assert _one(ingest_conn, "SELECT count(*) FROM devices") == len(DEVICES)


@pytest.mark.mqtt
def test_nul_through_the_running_service(runner: Any, publishers: Any) -> None:
    """End to end: before, the batch was refused, split, and the message saved whole as
    'database rejected' with a PostgreSQL error, its valid reading only inside the dead letter."""
    from tests.integration.ingest.conftest import count, wait_for

    runner.start()
    payload = (
        b'[{"ts": %d, "values": {"temperature_c": 21.5}},'
        b' {"ts": %d, "values": {"temp\\u0000": 1}}]' % (T0, T0 + 1000)
    )
    publishers("HT-1").publish(HT1, payload)
    assert wait_for(lambda: count(runner.dsn, "SELECT count(*) FROM dead_letters") == 1)
    assert wait_for(lambda: count(runner.dsn, "SELECT count(*) FROM heating_readings") == 1)
    with psycopg.connect(runner.dsn) as conn:
        reason, detail = conn.execute("SELECT reason, detail FROM dead_letters").fetchone()  # type: ignore[misc]
    assert reason == Reason.VALIDATION
    assert "temp\\u0000" in detail

"""Fuzzing the decoder and the dead-letter store: arbitrary bytes and JSON against a real database.

Properties, for every message: no exception escapes the decoder or the writer; the message is
stored, dead-lettered with a reason, or carries nothing (an empty list or object); each valid
reading and complaint in it is stored even when junk sits beside it; a dead letter's payload
keeps the bytes (whole-message rejections store the raw payload unchanged).

Bounded for CI: a few hundred examples in total, a few seconds.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.batcher import PendingBatch
from ingest.decode import Decoder, Reason
from ingest.registry_cache import RegistryCache, load_snapshot
from ingest.writer import prepare_connection, write_batch

pytestmark = [pytest.mark.pg]

RECV = 1_735_689_600_000  # 2025-01-01T00:00:00Z
T_VALID = RECV - 86_400_000  # valid readings are a day old, unique per example
REASONS = {str(r) for r in Reason}
FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples every run: CI stays reproducible
)
TOPICS = (
    "cityops/v1/heating/HT-1/telemetry",
    "cityops/v1/streetlight/SL-1/telemetry",
    "cityops/v1/gateway/GW-1/telemetry",
    "cityops/v1/hotline/12345/complaints",
    "cityops/v1/charger/CH-1/status",
    "cityops/v1/gateway/GW-1/status",
    "cityops/v1/heating/NOPE/telemetry",
    "cityops/v2/heating/HT-1/telemetry",
)

# JSON text with the characters that hurt: NUL, controls, non-BMP, and raw escapes
_pieces = ["\x00", "\x01", "a", "é", "温", "😀", "\\", '"', "ts", "values", "temperature_c"]
_text = st.lists(st.sampled_from(_pieces), max_size=6).map("".join) | st.text(max_size=8)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12,
)
_counter = itertools.count()


@pytest.fixture(scope="module")
def fuzz_db(pg_admin_dsn: str) -> Iterator[str]:
    """One migrated database with the test devices for all fuzz examples of this module."""
    from cityops import registry
    from cityops.db import migrate
    from tests.conftest import _create_db, make_settings
    from tests.integration.ingest.conftest import DEVICES

    gen = _create_db(pg_admin_dsn)
    dsn = next(gen)
    with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:
        migrate.migrate(conn, make_settings(dsn, timescaledb="off").storage)
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        registry.import_areas(conn, registry.reference_area_records(), "reference")
        (area,) = conn.execute("SELECT min(code) FROM areas").fetchone()  # type: ignore[misc]
        for device_id, (kind, gateway) in DEVICES.items():
            conn.execute(
                "INSERT INTO devices (device_id, kind, area_code, gateway_id) "
                "VALUES (%s, %s, %s, %s)",
                (device_id, kind, area, gateway),
            )
    yield dsn
    gen.close()


@pytest.fixture(scope="module")
def fuzz(fuzz_db: str) -> Iterator[tuple[psycopg.Connection[Any], Decoder]]:
    """A connection and a decoder shared by the examples."""
    with psycopg.connect(fuzz_db, options="-c TimeZone=UTC") as conn:
        prepare_connection(conn)

        def load() -> Any:
            with psycopg.connect(fuzz_db) as c:
                return load_snapshot(c)

        cache = RegistryCache(load)
        cache.reload()
        yield conn, Decoder(cache)


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


def _run(conn: psycopg.Connection[Any], decoder: Decoder, topic: str, payload: bytes) -> None:
    """Decode and write one message; every dead letter it made is stored, with a reason."""
    before = _count(conn, "dead_letters")
    batch = PendingBatch()
    decoder.decode(topic, payload, RECV, batch)  # must not raise
    result = write_batch(conn, batch)  # must not raise: every dead letter is storable
    carried = batch.row_count + len(batch.registrations)
    assert carried > 0 or _is_empty(payload), f"{topic} {payload!r}: nothing stored or rejected"
    letters = [*batch.dead_letters, *result.conflicts]
    for d in letters:
        assert d.reason in REASONS
        assert d.detail
    assert _count(conn, "dead_letters") - before == len(letters)


def _is_empty(payload: bytes) -> bool:
    try:
        body = json.loads(payload)
    except ValueError:
        return False
    return body in ([], {})


@FUZZ
@given(topic=st.sampled_from(TOPICS), payload=st.binary(max_size=200))
def test_arbitrary_bytes(
    fuzz: tuple[psycopg.Connection[Any], Decoder], topic: str, payload: bytes
) -> None:
    conn, decoder = fuzz
    batch = PendingBatch()
    decoder.decode(topic, payload, RECV, batch)
    write_batch(conn, batch)
    if not _is_empty(payload):
        assert batch.row_count > 0
    # a message rejected whole keeps its exact bytes
    for d in batch.dead_letters:
        if d.reason in (Reason.MALFORMED_JSON, Reason.BAD_TOPIC):
            assert d.payload == payload


@FUZZ
@given(topic=st.sampled_from(TOPICS), body=_json)
def test_arbitrary_json(
    fuzz: tuple[psycopg.Connection[Any], Decoder], topic: str, body: Any
) -> None:
    conn, decoder = fuzz
    for ensure_ascii in (True, False):
        payload = json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
        _run(conn, decoder, topic, payload)


@FUZZ
@given(
    temps=st.lists(st.floats(min_value=-40, max_value=60), min_size=1, max_size=5),
    junk=st.lists(_json, max_size=4),
    via_gateway=st.booleans(),
    seed=st.randoms(use_true_random=False),
)
def test_valid_readings_beside_junk_are_all_stored(
    fuzz: tuple[psycopg.Connection[Any], Decoder],
    temps: list[float],
    junk: list[Any],
    via_gateway: bool,
    seed: Any,
) -> None:
    conn, decoder = fuzz
    base = T_VALID + next(_counter) * 1000
    valid = [{"ts": base + i, "values": {"temperature_c": t}} for i, t in enumerate(temps)]
    # junk that happens to be a valid reading must not collide with the valid ones' keys
    items = [*valid, *[j for j in junk if not (isinstance(j, dict) and "ts" in j)]]
    seed.shuffle(items)
    if via_gateway:
        topic, body = "cityops/v1/gateway/GW-1/telemetry", {"HT-2": items}
        device = "HT-2"
    else:
        topic, body = "cityops/v1/heating/HT-1/telemetry", items
        device = "HT-1"
    _run(conn, decoder, topic, json.dumps(body).encode())
    rows = conn.execute(
        "SELECT (extract(epoch FROM ts) * 1000)::bigint, temperature_c FROM heating_readings "
        "WHERE device_id = %s AND ts >= to_timestamp(%s / 1000.0) "
        "AND ts < to_timestamp(%s / 1000.0) ORDER BY ts",
        (device, base, base + len(temps)),
    ).fetchall()
    conn.commit()
    assert rows == [(v["ts"], v["values"]["temperature_c"]) for v in valid]


@FUZZ
@given(junk=st.lists(_json, max_size=3), text=_text, seed=st.randoms(use_true_random=False))
def test_valid_complaints_beside_junk_are_all_stored(
    fuzz: tuple[psycopg.Connection[Any], Decoder], junk: list[Any], text: str, seed: Any
) -> None:
    conn, decoder = fuzz
    n = next(_counter)
    good = {
        "complaint_id": f"FZ-{n}",
        "received_at": T_VALID,
        "category": "heating",
        "text": text.replace("\x00", ""),
    }
    items = [good, *[j for j in junk if not (isinstance(j, dict) and "complaint_id" in j)]]
    seed.shuffle(items)
    _run(conn, decoder, "cityops/v1/hotline/12345/complaints", json.dumps(items).encode())
    row = conn.execute(
        "SELECT text FROM complaints WHERE complaint_id = %s", (good["complaint_id"],)
    ).fetchone()
    conn.commit()
    assert row == (good["text"],)

"""Registry changes reach a running live-rates consumer without a restart."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from cityops.batch import CommittedBatch, KindBatch
from cityops.catalog import Kind
from stream.live import LiveRates
from tests.conftest import make_settings

pytestmark = pytest.mark.pg


def _lamp(conn: psycopg.Connection[object], device: str) -> None:
    conn.execute(
        "INSERT INTO devices (device_id, kind, area_code) VALUES (%s, 'streetlight', 'CY-JW')",
        (device,),
    )


def test_reload_registry_takes_new_devices_and_keeps_state(migrated_db: str) -> None:
    t = int(datetime(2026, 1, 15, 14, tzinfo=UTC).timestamp() * 1000)
    on = {"power_state": "on", "fault": "none", "power_w": 80.0}

    with psycopg.connect(migrated_db, autocommit=True, options="-c TimeZone=UTC") as conn:
        _lamp(conn, "L-1")
        live = LiveRates.from_db(make_settings(migrated_db), conn)

        def feed(seq: int, rows: list[tuple[str, int, int, dict[str, object]]]) -> None:
            kb = KindBatch.from_rows(Kind.STREETLIGHT, rows)
            live.on_batch(
                CommittedBatch(seq=seq, committed_at=datetime.now(UTC), readings={kb.kind: kb})
            )

        feed(1, [("L-1", t, t, on), ("L-2", t, t, on)])  # L-2 is not registered yet
        assert live.devices[Kind.STREETLIGHT].ids.tolist() == ["L-1"]

        _lamp(conn, "L-2")
        assert live.reload_registry() == 2
        assert live.devices[Kind.STREETLIGHT].ids.tolist() == ["L-1", "L-2"]
        feed(2, [("L-1", t + 60_000, t, on), ("L-2", t + 60_000, t, on)])
        # L-1's state survived the reload (two readings), L-2 counts from its registration
        assert live.sensor_state(Kind.STREETLIGHT).count.tolist() == [2, 1]
        reloads = live.registry_reloads
        assert live.reload_registry() == 2  # nothing changed: not read again
        assert live.registry_reloads == reloads
        conn.execute("UPDATE devices SET status = 'retired' WHERE device_id = 'L-2'")
        assert live.reload_registry() == 2
        assert live.registry_reloads == reloads + 1
        assert live.devices[Kind.STREETLIGHT].active.tolist() == [True, False]


def test_the_registry_counter_moves_with_devices_and_areas_only(migrated_db: str) -> None:
    from cityops import registry_version

    with psycopg.connect(migrated_db, autocommit=True) as conn:
        v0 = registry_version.read(conn)
        assert v0 is not None
        _lamp(conn, "L-9")
        v1 = registry_version.read(conn)
        assert v1 is not None
        assert v1 > v0
        conn.execute(
            "INSERT INTO streetlight_readings (device_id, ts, power_state, received_at)"
            " VALUES ('L-9', now(), 1, now())"
        )
        assert registry_version.read(conn) == v1  # readings are not the registry
        conn.execute("UPDATE areas SET population = population WHERE code = 'CY-JW'")
        v2 = registry_version.read(conn)
        assert v2 is not None
        assert v2 > v1
        # seen by others only once committed
        with psycopg.connect(migrated_db) as other:
            other.execute("DELETE FROM devices WHERE device_id = 'L-9'")
            assert registry_version.read(conn) == v2
            other.commit()
        assert (registry_version.read(conn) or 0) > v2

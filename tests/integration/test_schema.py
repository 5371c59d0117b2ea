"""The schema follows the catalog: readings columns, types and the closed sets in CHECKs."""

from __future__ import annotations

import psycopg
import pytest

from cityops import catalog

pytestmark = pytest.mark.pg

COLUMNS_SQL = """
SELECT column_name, data_type FROM information_schema.columns
WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position
"""


@pytest.mark.parametrize("kind", list(catalog.Kind))
def test_readings_table_matches_catalog(migrated_db: str, kind: catalog.Kind) -> None:
    spec = catalog.KINDS[kind]
    expected = [("device_id", "text"), ("ts", "timestamp with time zone")]
    expected += [(f.name, f.type.sql_type) for f in spec.readings]
    expected += [("received_at", "timestamp with time zone")]
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute(COLUMNS_SQL, (spec.table,)).fetchall() == expected
        pk = conn.execute(
            "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (spec.table,),
        ).fetchone()
        assert pk == (["device_id", "ts"],)


def _check_values(
    conn: psycopg.Connection[tuple[object, ...]], table: str, column: str
) -> set[str]:
    """Try every value the catalog allows, and one it does not, against the table's CHECK."""
    rows = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'c'",
        (table,),
    ).fetchall()
    return {r[0] for r in rows if column in r[0]}


def test_closed_sets_match_catalog(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        (kinds_check,) = _check_values(conn, "devices", "kind")
        for kind in catalog.Kind:
            assert f"'{kind.value}'" in kinds_check
        (status_check,) = _check_values(conn, "devices", "status")
        for status in catalog.DeviceStatus:
            assert f"'{status.value}'" in status_check
        (category_check,) = _check_values(conn, "complaints", "category")
        for cat in catalog.ComplaintCategory:
            assert f"'{cat.value}'" in category_check
        (type_check,) = _check_values(conn, "areas", "type")
        for t in catalog.AreaType:
            assert f"'{t.value}'" in type_check


def test_duplicate_reading_key_is_refused(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, area_code) "
            "VALUES ('SL-1', 'streetlight', 'CY-JW')"
        )
        conn.execute(
            "INSERT INTO streetlight_readings (device_id, ts, power_state) "
            "VALUES ('SL-1', '2026-11-21T10:00:00Z', 'on')"
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO streetlight_readings (device_id, ts, power_state) "
                "VALUES ('SL-1', '2026-11-21T10:00:00Z', 'off')"
            )


def test_rates_hourly_accepts_only_whole_hours(migrated_db: str) -> None:
    with psycopg.connect(migrated_db, options="-c TimeZone=Asia/Kolkata") as conn:
        conn.execute(
            "INSERT INTO rates_hourly VALUES ('CY-JW', 'streetlight', 'lighting_rate', "
            "'2026-11-21T10:00:00Z', 99, 100, 100)"
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO rates_hourly VALUES ('CY-JW', 'streetlight', "
                "'lighting_rate', '2026-11-21T10:30:00Z', 1, 1, 1)"
            )

"""The API over a real PostgreSQL: an app per test, keys of every role, and seeded data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from api.app import create_app
from cityops import apikeys, registry
from cityops.settings import ApiSettings, DatabaseSettings, MqttSettings, Settings
from tests.conftest import free_port

T0 = datetime(2026, 1, 10, tzinfo=UTC)

DEVICES_CSV = """\
device_id,kind,area_code,lat,lon,gateway_id,install_date,status,road,schedule_class,rated_power_w,cabinet_id,owner_unit,site_id,public,power_kw,heated_area_m2,compound
SL-1,streetlight,CY-JW,39.906,116.452,GW-1,2023-05-01,,朝阳路,mains,120,CAB-1,,,,,,
SL-2,streetlight,CY-JW,39.907,116.453,GW-1,,,朝阳路,solar,,CAB-1,,,,,,
SL-3,streetlight,CY-CW,39.92,116.43,GW-2,,,朝阳北路,mains,,CAB-2,,,,,,
MH-1,manhole,CY-CW,39.92,116.43,,,,朝阳北路,,,,telecom,,,,,
CH-1,charger,CY-WJ,40.0,116.47,,,maintenance,,,,,,SITE-1,true,7,,
HT-1,heating,CY-SJ,39.89,116.46,,,,,,,,,,,,85.5,劲松小区
"""


@dataclass(frozen=True)
class Keys:
    """Plaintext keys of each role (and a revoked one)."""

    viewer: str
    duty: str
    admin: str
    revoked: str

    def header(self, role: str) -> dict[str, str]:
        """``Authorization: Bearer`` for the key of ``role``."""
        return {"Authorization": f"Bearer {getattr(self, role)}"}


def api_settings(dsn: str, *, mqtt_port: int | None = None, page_size_max: int = 1000) -> Settings:
    """Settings for an API test: the test database, a broker (default: a closed port)."""
    return Settings(
        db=DatabaseSettings(dsn=dsn, pool_min=1, pool_max=4),
        mqtt=MqttSettings(host="127.0.0.1", port=mqtt_port or free_port()),
        api=ApiSettings(page_size_max=page_size_max),
    )


@pytest.fixture
def keys(migrated_db: str) -> Keys:
    """One key per role, created through cityops.apikeys as `cityops keys create` does."""
    with psycopg.connect(migrated_db) as conn:
        made = {r: apikeys.create_key(conn, f"test-{r}", r)[1] for r in ("viewer", "duty", "admin")}
        rid, revoked = apikeys.create_key(conn, "test-revoked", "admin")
        apikeys.revoke_key(conn, rid)
    return Keys(revoked=revoked, **made)


@pytest.fixture
def client(migrated_db: str, keys: Keys) -> Iterator[TestClient]:
    """A client of an app on the test database (lifespan run: pool open, hub started)."""
    with TestClient(create_app(api_settings(migrated_db))) as c:
        yield c


def seed_devices(dsn: str) -> None:
    """Six devices of every kind in a few areas."""
    with psycopg.connect(dsn) as conn:
        report = registry.import_devices(
            conn, list(registry.parse_records(DEVICES_CSV, "csv")), "seed"
        )
    assert not report.errors, report.errors


def seed_heating_readings(dsn: str, device: str = "HT-1", hours: int = 6) -> None:
    """One reading every 10 minutes for ``hours`` from T0: temperature 15 + minutes/60."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        rows = [
            (device, T0 + timedelta(minutes=10 * i), 15.0 + i / 6, 40.0, 90.0)
            for i in range(hours * 6)
        ]
        cur.executemany(
            "INSERT INTO heating_readings (device_id, ts, temperature_c, humidity_pct, "
            "battery_pct) VALUES (%s, %s, %s, %s, %s)",
            rows,
        )


def seed_alert(
    dsn: str,
    *,
    state: str = "firing",
    severity: str = "critical",
    area: str = "CY-JW",
    device: str | None = "SL-1",
    rule: str = "lamp_off_at_night",
) -> int:
    """An alert row as the engine stores it, with its first history entry."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "INSERT INTO alerts (fingerprint, rule, kind, severity, labels, summary, state, "
            "device_id, area_code, started_at, fired_at, last_seen) VALUES "
            "(md5(random()::text), %s, 'streetlight', %s, %s, 'lamp off', %s, %s, %s, %s, %s, %s) "
            "RETURNING id",
            (
                rule,
                severity,
                Jsonb({"device_id": device or "", "area_code": area}),
                state,
                device,
                area,
                T0,
                T0 if state != "pending" else None,
                T0,
            ),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO alert_events (alert_id, at, event) VALUES (%s, %s, %s)",
            (row[0], T0, state),
        )
        if state == "resolved":
            conn.execute("UPDATE alerts SET resolved_at = %s WHERE id = %s", (T0, row[0]))
    return int(row[0])


def seed_case(dsn: str, *, area: str = "CY-JW", kind: str = "streetlight") -> int:
    """A detected case with its first step."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "INSERT INTO cases (title, source, kind, area_code, device_id, detected_at) "
            "VALUES ('lamp out', 'manual', %s, %s, NULL, %s) RETURNING id",
            (kind, area, T0),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO case_events (case_id, at, to_stage, actor) "
            "VALUES (%s, %s, 'detected', 't')",
            (row[0], T0),
        )
    return int(row[0])

"""Readings over HTTP: raw paging, buckets, fields, CSV export and every bad range refused."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient

from tests.integration.api.conftest import Keys, seed_devices, seed_heating_readings

pytestmark = pytest.mark.pg

RANGE = {"start": "2026-01-10T00:00:00Z", "end": "2026-01-10T06:00:00Z"}


@pytest.fixture
def seeded(migrated_db: str) -> str:
    """Devices plus 36 heating readings of HT-1 (6 h every 10 min)."""
    seed_devices(migrated_db)
    seed_heating_readings(migrated_db)
    return migrated_db


def test_raw_readings_page_in_time_order(client: TestClient, keys: Keys, seeded: str) -> None:
    h = keys.header("viewer")
    seen: list[str] = []
    cursor = None
    while True:
        params = {**RANGE, "device_id": "HT-1", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/v1/readings", params=params, headers=h).json()
        seen += [r["ts"] for r in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 36 == len(set(seen))
    assert seen == sorted(seen)


def test_raw_readings_fields_area_and_range(client: TestClient, keys: Keys, seeded: str) -> None:
    h = keys.header("viewer")
    body = client.get(
        "/api/v1/readings",
        params={
            **RANGE,
            "end": "2026-01-10T01:00:00Z",
            "device_id": "HT-1",
            "fields": "temperature_c",
        },
        headers=h,
    ).json()
    assert len(body["items"]) == 6
    assert body["items"][0]["values"] == {"temperature_c": 15.0}
    area = client.get(
        "/api/v1/readings",
        params={**RANGE, "kind": "heating", "area_code": "CY-SJ", "limit": 100},
        headers=h,
    ).json()
    assert len(area["items"]) == 36
    assert {r["device_id"] for r in area["items"]} == {"HT-1"}
    other = client.get(
        "/api/v1/readings", params={**RANGE, "kind": "heating", "area_code": "CY-JW"}, headers=h
    ).json()
    assert other["items"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"device_id": "HT-1", "fields": "colour"}, "fields"),
        ({"device_id": "HT-1", "kind": "streetlight"}, "kind"),
        ({"area_code": "CY-SJ"}, "kind"),
        ({"device_id": "HT-1", "area_code": "CY-SJ", "kind": "heating"}, "device_id"),
        ({}, "device_id"),
        ({"device_id": "HT-1", "start": "2026-01-10T06:00:00Z"}, "end"),
        ({"device_id": "HT-1", "start": "2026-01-10T00:00:00"}, "start"),
        ({"device_id": "HT-1", "start": "9999-12-31T23:59:59+14:00"}, "start"),
        ({"device_id": "HT-1", "end": "2028-01-10T00:00:00Z"}, "end"),
        ({"device_id": "HT-1", "cursor": "garbage"}, "cursor"),
        ({"device_id": "HT-1", "limit": 100000}, "limit"),
    ],
)
def test_bad_readings_queries_are_422(
    client: TestClient, keys: Keys, seeded: str, params: dict[str, str], field: str
) -> None:
    r = client.get("/api/v1/readings", params={**RANGE, **params}, headers=keys.header("viewer"))
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]


def test_unknown_device_or_area_is_404(client: TestClient, keys: Keys, seeded: str) -> None:
    h = keys.header("viewer")
    assert (
        client.get("/api/v1/readings", params={**RANGE, "device_id": "X"}, headers=h).status_code
        == 404
    )
    r = client.get(
        "/api/v1/readings", params={**RANGE, "kind": "heating", "area_code": "X"}, headers=h
    )
    assert r.status_code == 404


def test_range_is_required(client: TestClient, keys: Keys, seeded: str) -> None:
    r = client.get("/api/v1/readings", params={"device_id": "HT-1"}, headers=keys.header("viewer"))
    assert r.status_code == 422
    assert "start" in r.json()["error"]["message"]


def test_buckets_aggregate_per_field(client: TestClient, keys: Keys, seeded: str) -> None:
    r = client.get(
        "/api/v1/readings/buckets",
        params={**RANGE, "device_id": "HT-1", "bucket_s": 3600},
        headers=keys.header("viewer"),
    )
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 6
    first = items[0]
    assert first["bucket"].startswith("2026-01-10T00:00:00")
    assert first["readings"] == 6
    assert first["devices"] == 1
    temps = [15 + i / 6 for i in range(6)]
    assert first["values"]["temperature_c"]["avg"] == pytest.approx(sum(temps) / 6)
    assert first["values"]["temperature_c"]["min"] == pytest.approx(15.0)
    assert first["values"]["temperature_c"]["max"] == pytest.approx(temps[-1])
    assert items[-1]["values"]["temperature_c"]["min"] == pytest.approx(20.0)


def test_buckets_page_and_limits(client: TestClient, keys: Keys, seeded: str) -> None:
    h = keys.header("viewer")
    params = {**RANGE, "kind": "heating", "area_code": "CY-SJ", "bucket_s": 1800, "limit": 5}
    pages: list[list[dict[str, object]]] = []
    cursor = None
    while True:
        page = client.get(
            "/api/v1/readings/buckets",
            params={**params, **({"cursor": cursor} if cursor else {})},
            headers=h,
        ).json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [5, 5, 2]
    buckets = [b["bucket"] for p in pages for b in p]
    assert buckets == sorted(set(buckets))
    assert sum(int(b["readings"]) for p in pages for b in p) == 36  # type: ignore[call-overload]
    r = client.get(
        "/api/v1/readings/buckets",
        params={**RANGE, "device_id": "HT-1", "bucket_s": 1},
        headers=h,
    )
    assert r.status_code == 422
    assert "bucket_s" in r.json()["error"]["message"]
    r = client.get("/api/v1/readings/buckets", params={**RANGE, "device_id": "HT-1"}, headers=h)
    assert r.status_code == 422


def test_buckets_of_text_and_bool_fields(client: TestClient, keys: Keys, seeded: str) -> None:
    import psycopg

    with psycopg.connect(seeded) as conn:
        conn.execute(
            "INSERT INTO manhole_readings (device_id, ts, cover_open, event) VALUES "
            "('MH-1', '2026-01-10T00:05Z', true, 'open'), ('MH-1', '2026-01-10T00:10Z', false, "
            "'heartbeat'), ('MH-1', '2026-01-10T00:20Z', false, NULL), "
            "('MH-1', '2026-01-10T00:30Z', true, NULL)"
        )
    r = client.get(
        "/api/v1/readings/buckets",
        params={**RANGE, "device_id": "MH-1", "bucket_s": 3600, "fields": "cover_open,event"},
        headers=keys.header("viewer"),
    ).json()
    assert r["items"][0]["values"] == {
        "cover_open": {"share_true": 0.5},
        "event": {"last": "heartbeat"},
    }


def test_csv_export_streams_every_row(client: TestClient, keys: Keys, seeded: str) -> None:
    r = client.get(
        "/api/v1/readings/export",
        params={**RANGE, "device_id": "HT-1", "fields": "temperature_c,battery_pct"},
        headers=keys.header("viewer"),
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="HT-1-heating.csv"' in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["device_id", "ts", "temperature_c", "battery_pct"]
    assert len(rows) == 37
    assert rows[1][0] == "HT-1"
    assert float(rows[1][2]) == 15.0
    r = client.get(
        "/api/v1/readings/export",
        params={**RANGE, "device_id": "HT-1", "fields": "nope"},
        headers=keys.header("viewer"),
    )
    assert r.status_code == 422

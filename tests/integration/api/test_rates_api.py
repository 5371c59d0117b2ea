"""Rates over HTTP: Σnumerator ÷ Σdenominator per area, district and city, hour/day/month."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.integration.api.conftest import T0, Keys

pytestmark = pytest.mark.pg

DAY = {"start": "2026-01-10T00:00:00+08:00", "end": "2026-01-11T00:00:00+08:00"}


@pytest.fixture
def rated(migrated_db: str) -> str:
    """Lighting rates for two areas over the 24 local hours of 2026-01-10."""
    start = T0 - timedelta(hours=8)  # local midnight in Asia/Shanghai
    rows = []
    for h in range(24):
        rows.append(("CY-JW", start + timedelta(hours=h), 9.0, 10.0))
        rows.append(("CY-CW", start + timedelta(hours=h), 30.0, 60.0))
    with psycopg.connect(migrated_db) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO rates_hourly (area_code, kind, metric, hour, numerator, denominator, "
            "samples) VALUES (%s, 'streetlight', 'lighting_rate', %s, %s, %s, 1)",
            rows,
        )
    return migrated_db


def _get(client: TestClient, keys: Keys, **params: object) -> dict[str, object]:
    r = client.get(
        "/api/v1/rates",
        params={"kind": "streetlight", **DAY, **params},
        headers=keys.header("viewer"),
    )
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def test_hourly_per_area_and_paging(client: TestClient, keys: Keys, rated: str) -> None:
    first = _get(client, keys, limit=30)
    items = first["items"]
    assert isinstance(items, list)
    assert len(items) == 30
    assert first["next_cursor"] == "30"
    rest = _get(client, keys, limit=30, cursor="30")
    assert len(rest["items"]) == 18  # type: ignore[arg-type]
    assert rest["next_cursor"] is None
    jw = _get(client, keys, area_code="CY-JW")["items"]
    assert len(jw) == 24  # type: ignore[arg-type]
    assert all(r["value"] == pytest.approx(0.9) for r in jw)  # type: ignore[union-attr]


def test_daily_rollups_are_ratio_of_sums(client: TestClient, keys: Keys, rated: str) -> None:
    (city,) = _get(client, keys, grain="day", level="city")["items"]  # type: ignore[misc]
    assert city["scope"] == "city"
    assert city["numerator"] == pytest.approx(24 * 39)
    assert city["denominator"] == pytest.approx(24 * 70)
    assert city["value"] == pytest.approx(39 / 70)  # not the mean of 0.9 and 0.5
    (district,) = _get(client, keys, grain="day", level="district")["items"]  # type: ignore[misc]
    assert district["scope"] == "Chaoyang"
    areas = _get(client, keys, grain="month", metric="lighting_rate")["items"]
    assert {a["scope"]: a["value"] for a in areas} == {  # type: ignore[union-attr]
        "CY-CW": pytest.approx(0.5),
        "CY-JW": pytest.approx(0.9),
    }
    assert _get(client, keys, metric="other")["items"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "toaster"}, "kind"),
        ({"grain": "week"}, "grain"),
        ({"level": "planet"}, "level"),
        ({"start": "2025-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
        ({"end": "2026-01-09T00:00:00Z"}, "end"),
        ({"metric": "Drop Table"}, "metric"),
        ({"cursor": "-1"}, "cursor"),
    ],
)
def test_bad_rate_queries_are_422(
    client: TestClient, keys: Keys, params: dict[str, str], field: str
) -> None:
    r = client.get(
        "/api/v1/rates",
        params={"kind": "streetlight", **DAY, **params},
        headers=keys.header("viewer"),
    )
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]

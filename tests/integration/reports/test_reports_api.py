"""The reports and indicators endpoints over a real PostgreSQL, with real API keys."""

from __future__ import annotations

import io
from collections.abc import Iterator

import openpyxl
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from cityops import apikeys
from tests.integration.api.conftest import Keys, api_settings
from tests.integration.reports.test_monthly_report import seed

pytestmark = pytest.mark.pg


@pytest.fixture
def keys(migrated_db: str) -> Keys:
    """One key per role, as `cityops keys create` makes them."""
    with psycopg.connect(migrated_db) as conn:
        made = {r: apikeys.create_key(conn, f"rep-{r}", r)[1] for r in ("viewer", "duty", "admin")}
    return Keys(revoked="", **made)


@pytest.fixture
def client(migrated_db: str, keys: Keys) -> Iterator[TestClient]:
    seed(migrated_db)
    with TestClient(create_app(api_settings(migrated_db))) as c:
        yield c


@pytest.mark.slow
def test_monthly_report_formats(client: TestClient, keys: Keys) -> None:
    viewer = keys.header("viewer")
    r = client.get("/api/v1/reports/monthly", params={"month": "2026-01"}, headers=viewer)
    assert r.status_code == 200, r.text
    body = r.json()
    light = next(
        x for x in body["rates"] if x["scope"] == "Chaoyang" and x["metric"] == "lighting_rate"
    )
    assert light["value"] == round(800 / 900, 9)
    r = client.get(
        "/api/v1/reports/monthly",
        params={"month": "2026-01", "format": "xlsx", "area": "CY-JW"},
        headers=viewer,
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert 'filename="cityops-monthly-CY-JW-2026-01.xlsx"' in r.headers["content-disposition"]
    assert "Evaluation" in openpyxl.load_workbook(io.BytesIO(r.content)).sheetnames
    r = client.get(
        "/api/v1/reports/monthly", params={"month": "2026-01", "format": "csv"}, headers=viewer
    )
    assert r.text.startswith("section,scope,level,item,field,value")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"month": "2026-13"}, "YYYY-MM"),
        ({"month": "jan"}, "month"),
        ({"month": "2026-01", "format": "docx"}, "format"),
        ({"month": "2026-01", "area": "NOPE"}, "not registered"),
    ],
)
def test_monthly_report_bad_input_is_422(
    client: TestClient, keys: Keys, params: dict[str, str], needle: str
) -> None:
    r = client.get("/api/v1/reports/monthly", params=params, headers=keys.header("viewer"))
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]["message"]


def test_reads_need_a_key(client: TestClient) -> None:
    assert client.get("/api/v1/reports/monthly", params={"month": "2026-01"}).status_code == 401
    assert client.get("/api/v1/indicators").status_code == 401


def test_observations_forecasts_and_evaluation(client: TestClient, keys: Keys) -> None:
    obs = {
        "indicator": "cy-gov-22",
        "observed_on": "2023-06-30",
        "value": 9,
        "source": "区发改委",
        "note": "9 of 18 substations",
    }
    r = client.post("/api/v1/indicators/observations", json=obs, headers=keys.header("viewer"))
    assert r.status_code == 403
    r = client.post("/api/v1/indicators/observations", json=obs, headers=keys.header("admin"))
    assert r.status_code == 201, r.text
    bad = client.post(
        "/api/v1/indicators/observations",
        json={**obs, "indicator": "nope"},
        headers=keys.header("admin"),
    )
    assert bad.status_code == 422
    assert "unknown indicator" in bad.json()["error"]["message"]
    no_value = client.post(
        "/api/v1/indicators/observations",
        json={k: v for k, v in obs.items() if k != "value"},
        headers=keys.header("admin"),
    )
    assert no_value.status_code == 422
    r = client.post(
        "/api/v1/indicators/forecasts",
        json={"indicator": "cy-gov-22", "made_on": "2023-06-30", "value": 18, "reason": ""},
        headers=keys.header("admin"),
    )
    assert r.status_code == 422
    r = client.get(
        "/api/v1/indicators/evaluation",
        params={"as_of": "2023-07-02"},
        headers=keys.header("viewer"),
    )
    assert r.status_code == 200
    rows = {x["key"]: x for x in r.json()["rows"]}
    assert rows["cy-gov-22"]["status"] == "on_track"  # 9/18 = 0.5 = time share at 2023-07-02
    assert rows["cy-gov-22"]["status_zh"] == "可以完成"
    r = client.get(
        "/api/v1/indicators/evaluation",
        params={"as_of": "2019-01-01"},
        headers=keys.header("viewer"),
    )
    assert r.status_code == 422
    r = client.get("/api/v1/indicators", params={"plan": "bj-cm"}, headers=keys.header("viewer"))
    assert r.status_code == 200
    assert len(r.json()["indicators"]) == 14
    r = client.get(
        "/api/v1/indicators/observations",
        params={"indicator": "cy-gov-22"},
        headers=keys.header("viewer"),
    )
    assert r.json()[0]["source"] == "区发改委"


@pytest.mark.slow
def test_rules_yes_no_values_and_provisional_report(client: TestClient, keys: Keys) -> None:
    admin, viewer = keys.header("admin"), keys.header("viewer")
    yes_no = {"indicator": "cy-gov-02", "observed_on": "2023-06-30", "source": "区城管执法局"}
    r = client.post(
        "/api/v1/indicators/observations", json={**yes_no, "value": 87.5}, headers=admin
    )
    assert r.status_code == 422
    assert "allowed values" in r.json()["error"]["message"]
    r = client.post("/api/v1/indicators/observations", json={**yes_no, "value": 1}, headers=admin)
    assert r.status_code == 201, r.text
    r = client.get("/api/v1/indicators/evaluation", params={"as_of": "2023-07-02"}, headers=viewer)
    rows = {x["key"]: x for x in r.json()["rows"]}
    assert rows["cy-gov-02"]["rule"] == "qualitative"
    assert rows["cy-gov-02"]["status"] == "achieved_early"
    assert rows["cy-gov-02"]["inputs"]["current"] == 1.0
    assert rows["cy-gov-03"]["no_target"]
    # The seeded heating complaints have no complaint-density rows beneath them: stale inputs.
    r = client.get(
        "/api/v1/reports/monthly",
        params={"month": "2026-01", "stale_rates": "provisional"},
        headers=viewer,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-report-provisional"] == "true"
    assert r.json()["freshness"]["provisional_kinds"] == ["heating"]
    r = client.get(
        "/api/v1/reports/monthly", params={"month": "2026-01", "stale_rates": "x"}, headers=viewer
    )
    assert r.status_code == 422
    r = client.get("/api/v1/reports/monthly", params={"month": "2026-01"}, headers=viewer)
    assert r.headers["x-report-provisional"] == "false"
    assert r.json()["freshness"]["recomputed"]

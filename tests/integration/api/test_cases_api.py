"""Cases (closed-loop stage moves) and hotline complaints over HTTP."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.integration.api.conftest import Keys, seed_case, seed_devices

pytestmark = pytest.mark.pg


def test_cases_list_filters_and_paging(client: TestClient, keys: Keys, migrated_db: str) -> None:
    a = seed_case(migrated_db)
    b = seed_case(migrated_db, area="CY-CW", kind="manhole")
    c = seed_case(migrated_db)
    h = keys.header("viewer")

    def ids(**params: object) -> list[int]:
        r = client.get("/api/v1/cases", params=params, headers=h)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    assert ids() == [c, b, a]
    assert ids(kind="manhole") == [b]
    assert ids(area_code="CY-JW") == [c, a]
    assert ids(stage="filed") == []
    assert ids(stage="detected", open=True) == [c, b, a]
    page = client.get("/api/v1/cases", params={"limit": 2}, headers=h).json()
    assert page["next_cursor"] == str(b)
    assert ids(limit=2, cursor=page["next_cursor"]) == [a]
    assert client.get("/api/v1/cases", params={"stage": "lost"}, headers=h).status_code == 422
    assert client.get("/api/v1/cases/999", headers=h).status_code == 404


def test_case_moves_through_the_loop(client: TestClient, keys: Keys, migrated_db: str) -> None:
    case = seed_case(migrated_db)
    duty = keys.header("duty")
    for stage in ("filed", "dispatched", "handled", "verified", "handled", "verified", "closed"):
        r = client.post(
            f"/api/v1/cases/{case}/transitions",
            json={"stage": stage, "comment": stage},
            headers=duty,
        )
        assert r.status_code == 200, r.text
        assert r.json()["stage"] == stage
    detail = client.get(f"/api/v1/cases/{case}", headers=keys.header("viewer")).json()
    assert detail["stage_zh"] == "结案"
    assert [e["to_stage"] for e in detail["events"]] == [
        "detected",
        "filed",
        "dispatched",
        "handled",
        "verified",
        "handled",
        "verified",
        "closed",
    ]
    assert all(e["actor"] == "test-duty" for e in detail["events"][1:])
    assert detail["closed_at"] is not None
    assert detail["filed_at"] is not None
    r = client.post(f"/api/v1/cases/{case}/transitions", json={"stage": "filed"}, headers=duty)
    assert r.status_code == 409
    assert "cannot move" in r.json()["error"]["message"]


def test_invalid_moves(client: TestClient, keys: Keys, migrated_db: str) -> None:
    case = seed_case(migrated_db)
    duty = keys.header("duty")
    r = client.post(f"/api/v1/cases/{case}/transitions", json={"stage": "handled"}, headers=duty)
    assert r.status_code == 409
    assert "allowed: filed (立案), closed (结案)" in r.json()["error"]["message"]
    r = client.post(f"/api/v1/cases/{case}/transitions", json={"stage": "lost"}, headers=duty)
    assert r.status_code == 422
    assert "stage" in r.json()["error"]["message"]
    r = client.post("/api/v1/cases/999/transitions", json={"stage": "filed"}, headers=duty)
    assert r.status_code == 404
    r = client.post(f"/api/v1/cases/{case}/transitions", json={"stage": "closed"}, headers=duty)
    assert r.json()["rejected"] is True


def test_submit_complaint_links_a_case(client: TestClient, keys: Keys, migrated_db: str) -> None:
    seed_devices(migrated_db)
    duty = keys.header("duty")
    complaint = {
        "complaint_id": "HL-1",
        "received_at": "2026-01-10T20:00:00+08:00",
        "category": "streetlight",
        "area_code": "CY-JW",
        "device_id": "SL-1",
        "text": "路灯不亮",
    }
    r = client.post("/api/v1/complaints", json=complaint, headers=duty)
    assert r.status_code == 201, r.text
    stored = r.json()
    assert stored["received_at"].startswith("2026-01-10T12:00:00")
    assert stored["status"] == "received"
    assert stored["source"] == "api:test-duty"
    case = client.get(f"/api/v1/cases/{stored['case_id']}", headers=duty).json()
    assert case["source"] == "complaint"
    assert case["device_id"] == "SL-1"
    assert [c["complaint_id"] for c in case["complaints"]] == ["HL-1"]
    second = {**complaint, "complaint_id": "HL-2", "received_at": "2026-01-10T21:00:00+08:00"}
    r = client.post("/api/v1/complaints", json=second, headers=duty)
    assert r.json()["case_id"] == stored["case_id"]  # same device: same case
    r = client.post("/api/v1/complaints", json=complaint, headers=duty)
    assert r.status_code == 409
    assert "already stored" in r.json()["error"]["message"]
    assert (
        client.post("/api/v1/complaints", json=complaint, headers=keys.header("viewer")).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"category": "noise"}, "category"),
        ({"area_code": "CY-NOPE"}, "area_code"),
        ({"received_at": "yesterday"}, "received_at"),
        ({"received_at": "2026-01-10T20:00:00"}, "received_at"),
        ({"lat": 100}, "lat"),
        ({"text": "a\x00b"}, "text"),
        ({"complaint_id": ""}, "complaint_id"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_complaints_are_422(
    client: TestClient, keys: Keys, change: dict[str, object], field: str
) -> None:
    body = {
        "complaint_id": "HL-9",
        "received_at": "2026-01-10T20:00:00Z",
        "category": "heating",
        **change,
    }
    r = client.post("/api/v1/complaints", json=body, headers=keys.header("duty"))
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]


def test_list_complaints(client: TestClient, keys: Keys) -> None:
    duty = keys.header("duty")
    for i, (cat, area) in enumerate(
        [("heating", "CY-SJ"), ("heating", "CY-JW"), ("manhole", "CY-JW"), ("heating", "CY-SJ")]
    ):
        body = {
            "complaint_id": f"HL-{i}",
            "received_at": f"2026-01-1{i}T08:00:00Z",
            "category": cat,
            "area_code": area,
        }
        assert client.post("/api/v1/complaints", json=body, headers=duty).status_code == 201
    h = keys.header("viewer")

    def ids(**params: object) -> list[str]:
        r = client.get("/api/v1/complaints", params=params, headers=h)
        assert r.status_code == 200, r.text
        return [c["complaint_id"] for c in r.json()["items"]]

    assert ids() == ["HL-3", "HL-2", "HL-1", "HL-0"]
    assert ids(category="heating", area_code="CY-SJ") == ["HL-3", "HL-0"]
    assert ids(start="2026-01-11T00:00:00Z", end="2026-01-13T00:00:00Z") == ["HL-2", "HL-1"]
    page = client.get("/api/v1/complaints", params={"limit": 3}, headers=h).json()
    assert ids(limit=3, cursor=page["next_cursor"]) == ["HL-0"]
    assert client.get("/api/v1/complaints/HL-2", headers=h).json()["category"] == "manhole"
    assert client.get("/api/v1/complaints/HL-X", headers=h).status_code == 404
    assert client.get("/api/v1/complaints", params={"status": "lost"}, headers=h).status_code == 422
    r = client.get("/api/v1/complaints", params={"cursor": "x|y"}, headers=h)
    assert r.status_code == 422

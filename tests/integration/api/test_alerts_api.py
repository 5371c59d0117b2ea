"""Alerts and silences over HTTP, through the same store functions as `cityops alerts`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.integration.api.conftest import Keys, seed_alert

pytestmark = pytest.mark.pg


def test_list_filters_and_paging(client: TestClient, keys: Keys, migrated_db: str) -> None:
    firing = seed_alert(migrated_db)
    pending = seed_alert(migrated_db, state="pending", severity="warning", area="CY-CW")
    resolved = seed_alert(migrated_db, state="resolved", rule="other_rule")
    h = keys.header("viewer")

    def ids(**params: object) -> list[int]:
        r = client.get("/api/v1/alerts", params=params, headers=h)
        assert r.status_code == 200, r.text
        return [a["id"] for a in r.json()["items"]]

    assert ids() == [resolved, pending, firing]
    assert ids(open=True) == [pending, firing]
    assert ids(state="firing") == [firing]
    assert ids(severity="warning") == [pending]
    assert ids(area_code="CY-CW") == [pending]
    assert ids(rule="other_rule") == [resolved]
    assert ids(kind="streetlight") == [resolved, pending, firing]
    page = client.get("/api/v1/alerts", params={"limit": 2}, headers=h).json()
    assert [a["id"] for a in page["items"]] == [resolved, pending]
    assert ids(limit=2, cursor=page["next_cursor"]) == [firing]
    for bad in ({"state": "burning"}, {"severity": "meh"}, {"cursor": "x"}, {"limit": 1001}):
        r = client.get("/api/v1/alerts", params=bad, headers=h)
        assert r.status_code == 422, bad
        assert r.json()["error"]["code"] == "invalid"


def test_detail_ack_assign_comment(client: TestClient, keys: Keys, migrated_db: str) -> None:
    alert = seed_alert(migrated_db)
    duty = keys.header("duty")
    detail = client.get(f"/api/v1/alerts/{alert}", headers=keys.header("viewer")).json()
    assert detail["state"] == "firing"
    assert [e["event"] for e in detail["history"]] == ["firing"]
    r = client.post(f"/api/v1/alerts/{alert}/ack", json={"comment": "on it"}, headers=duty)
    assert r.status_code == 200, r.text
    assert r.json()["acked_by"] == "test-duty"
    assert r.json()["history"][-1]["event"] == "acknowledged"
    assert r.json()["history"][-1]["detail"] == {"comment": "on it"}
    again = client.post(f"/api/v1/alerts/{alert}/ack", json={}, headers=duty)
    assert again.status_code == 409
    assert "already acknowledged" in again.json()["error"]["message"]
    r = client.post(f"/api/v1/alerts/{alert}/assign", json={"assignee": "team-3"}, headers=duty)
    assert r.json()["assigned_to"] == "team-3"
    r = client.post(f"/api/v1/alerts/{alert}/comments", json={"text": "cabinet fuse"}, headers=duty)
    assert r.json()["history"][-1] == {
        **r.json()["history"][-1],
        "event": "comment",
        "actor": "test-duty",
        "detail": {"text": "cabinet fuse"},
    }
    assert (
        client.post(
            f"/api/v1/alerts/{alert}/comments", json={"text": "   "}, headers=duty
        ).status_code
        == 422
    )
    assert (
        client.post(
            f"/api/v1/alerts/{alert}/assign", json={"assignee": ""}, headers=duty
        ).status_code
        == 422
    )


def test_missing_and_resolved_alerts(client: TestClient, keys: Keys, migrated_db: str) -> None:
    duty = keys.header("duty")
    assert client.get("/api/v1/alerts/999", headers=duty).status_code == 404
    r = client.post("/api/v1/alerts/999/ack", json={}, headers=duty)
    assert r.status_code == 404
    assert client.get("/api/v1/alerts/0", headers=duty).status_code == 422
    assert client.get(f"/api/v1/alerts/{2**70}", headers=duty).status_code == 422
    resolved = seed_alert(migrated_db, state="resolved")
    r = client.post(f"/api/v1/alerts/{resolved}/ack", json={}, headers=duty)
    assert r.status_code == 409
    assert "resolved" in r.json()["error"]["message"]


def test_silences_crud(client: TestClient, keys: Keys) -> None:
    duty = keys.header("duty")
    r = client.post(
        "/api/v1/silences",
        json={
            "matchers": ["area_code=CY-JW", "rule=~lamp_.*"],
            "duration_s": 3600,
            "comment": "works",
        },
        headers=duty,
    )
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["active"] is True
    assert silence["matchers"] == ["area_code=CY-JW", "rule=~lamp_.*"]
    assert silence["created_by"] == "test-duty"
    later = client.post(
        "/api/v1/silences",
        json={
            "matchers": ["kind=manhole"],
            "starts_at": "2099-01-01T00:00:00Z",
            "ends_at": "2099-01-02T00:00:00Z",
        },
        headers=duty,
    ).json()
    viewer = keys.header("viewer")
    every = client.get("/api/v1/silences", headers=viewer).json()["items"]
    assert [s["id"] for s in every] == [later["id"], silence["id"]]
    active = client.get("/api/v1/silences", params={"active": True}, headers=viewer).json()
    assert [s["id"] for s in active["items"]] == [silence["id"]]
    page = client.get("/api/v1/silences", params={"limit": 1}, headers=viewer).json()
    assert page["next_cursor"] == str(later["id"])
    assert client.get(f"/api/v1/silences/{silence['id']}", headers=viewer).json() == silence
    r = client.delete(f"/api/v1/silences/{silence['id']}", headers=duty)
    assert r.status_code == 200
    assert r.json()["active"] is False
    assert r.json()["expired_at"] is not None
    assert client.delete(f"/api/v1/silences/{silence['id']}", headers=duty).status_code == 409
    assert client.delete("/api/v1/silences/999", headers=duty).status_code == 404
    assert client.delete(f"/api/v1/silences/{later['id']}", headers=viewer).status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"matchers": ["no operator"], "duration_s": 600}, "matchers"),
        ({"matchers": ["a=~("], "duration_s": 600}, "matchers"),
        ({"matchers": [], "duration_s": 600}, "matchers"),
        ({"matchers": ["a=b"]}, "ends_at"),
        ({"matchers": ["a=b"], "duration_s": 10}, "duration_s"),
        (
            {
                "matchers": ["a=b"],
                "starts_at": "2026-01-02T00:00:00Z",
                "ends_at": "2026-01-01T00:00:00Z",
            },
            "ends_at",
        ),
        ({"matchers": ["a=b"], "ends_at": "2026-01-01T00:00:00"}, "ends_at"),
    ],
)
def test_bad_silences_are_422(
    client: TestClient, keys: Keys, body: dict[str, object], field: str
) -> None:
    r = client.post("/api/v1/silences", json=body, headers=keys.header("duty"))
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]

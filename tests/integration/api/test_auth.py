"""Auth: 401 without a valid key (with WWW-Authenticate), 403 with a role too low."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.integration.api.conftest import Keys

pytestmark = pytest.mark.pg


def _assert_error(body: dict[str, object], code: str) -> None:
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]


def test_no_key_is_401_with_www_authenticate(client: TestClient) -> None:
    r = client.get("/api/v1/areas")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    _assert_error(r.json(), "unauthorized")
    assert "API key is required" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer cok_not-a-real-key"},
        {"X-API-Key": "nonsense"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
def test_unknown_key_is_401(client: TestClient, headers: dict[str, str]) -> None:
    r = client.get("/api/v1/areas", headers=headers)
    assert r.status_code == 401
    assert "www-authenticate" in r.headers


def test_revoked_key_is_401(client: TestClient, keys: Keys) -> None:
    r = client.get("/api/v1/areas", headers=keys.header("revoked"))
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]["message"]


def test_key_by_header_bearer_and_query(client: TestClient, keys: Keys) -> None:
    assert client.get("/api/v1/areas", headers=keys.header("viewer")).status_code == 200
    assert client.get("/api/v1/areas", headers={"X-API-Key": keys.viewer}).status_code == 200
    assert client.get("/api/v1/areas", params={"api_key": keys.viewer}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "needs"),
    [
        ("post", "/api/v1/alerts/1/ack", {}, "duty"),
        ("post", "/api/v1/cases/1/transitions", {"stage": "filed"}, "duty"),
        ("post", "/api/v1/silences", {"matchers": ["a=b"], "duration_s": 600}, "duty"),
        (
            "put",
            "/api/v1/areas/CY-JW",
            {"name_zh": "x", "type": "street", "district": "d"},
            "admin",
        ),
        ("put", "/api/v1/devices/X-1", {"kind": "manhole", "area_code": "CY-JW"}, "admin"),
        ("post", "/api/v1/devices/import", None, "admin"),
    ],
)
def test_role_too_low_is_403(
    client: TestClient, keys: Keys, method: str, path: str, body: object, needs: str
) -> None:
    lower = "viewer" if needs == "duty" else "duty"
    r = client.request(method, path, json=body, headers=keys.header(lower))
    assert r.status_code == 403
    _assert_error(r.json(), "forbidden")
    assert f"needs the {needs} role" in r.json()["error"]["message"]
    assert client.request(method, path, json=body).status_code == 401


def test_last_used_is_recorded(client: TestClient, keys: Keys, migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        before = conn.execute(
            "SELECT last_used_at FROM api_keys WHERE name = 'test-viewer'"
        ).fetchone()
    assert before == (None,)
    client.get("/api/v1/areas", headers=keys.header("viewer"))
    with psycopg.connect(migrated_db) as conn:
        after = conn.execute(
            "SELECT last_used_at FROM api_keys WHERE name = 'test-viewer'"
        ).fetchone()
    assert after is not None
    assert after[0] is not None


def test_only_the_hash_is_stored(keys: Keys, migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        stored = [r[0] for r in conn.execute("SELECT key_hash FROM api_keys").fetchall()]
    assert keys.admin not in stored
    assert all(len(h) == 64 for h in stored)

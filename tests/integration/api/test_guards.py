"""Issue 16 items 7 and 8: body limits before parsing/auth, auth throttling, security headers,
/metrics and /docs protection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.middleware import AuthThrottle
from cityops.settings import ApiSettings
from tests.integration.api.conftest import Keys, api_settings

pytestmark = pytest.mark.pg


def _app(dsn: str, **api: Any) -> TestClient:
    base = api_settings(dsn)
    environment = api.pop("environment", "development")
    settings = base.model_copy(update={"api": ApiSettings(**api), "environment": environment})
    return TestClient(create_app(settings))


def _chunks(total: int, size: int = 65536) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b" " * n


def test_oversized_body_is_refused_before_parsing_and_auth(migrated_db: str, keys: Keys) -> None:
    with _app(migrated_db, max_body_bytes=4096, max_import_bytes=65536) as client:
        big = b'{"note": "' + b"x" * 10_000 + b'"}'
        # no key at all: still 413 (not 401), the body is never parsed
        r = client.post(
            "/api/v1/alerts/1/comments", content=big, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413
        body = r.json()["error"]
        assert body["code"] == "too_large"
        assert "at most 4096 bytes" in body["message"]
        assert r.headers["x-content-type-options"] == "nosniff"
        # a chunked body without Content-Length is cut at the limit too
        r = client.post(
            "/api/v1/alerts/1/comments",
            content=_chunks(50_000),
            headers={"Content-Type": "application/json", **keys.header("duty")},
        )
        assert r.status_code == 413
        # the imports have their own, larger limit
        csv = "device_id,kind,area_code\n" + "".join(
            f"SL-{i},streetlight,CY-JW\n" for i in range(300)
        )
        assert 4096 < len(csv) < 65536
        r = client.post(
            "/api/v1/devices/import",
            content=csv,
            headers={"Content-Type": "text/csv", **keys.header("admin")},
        )
        assert r.status_code == 200, r.text
        r = client.post(
            "/api/v1/devices/import",
            content=csv * 20,
            headers={"Content-Type": "text/csv", **keys.header("admin")},
        )
        assert r.status_code == 413
        # a small body still works
        r = client.post(
            "/api/v1/alerts/999999/comments",
            json={"text": "hi"},
            headers=keys.header("duty"),
        )
        assert r.status_code in (404, 422), r.text


def test_failed_key_checks_are_throttled(migrated_db: str, keys: Keys) -> None:
    with _app(migrated_db, auth_failures_max=5, auth_failure_window_s=600) as client:
        codes = [
            client.get("/api/v1/areas", headers={"X-API-Key": f"cok_wrong{i}"}).status_code
            for i in range(5)
        ]
        assert codes == [401] * 5
        r = client.get("/api/v1/areas", headers={"X-API-Key": "cok_wrong-again"})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "too_many_requests"
        # the address is locked out for the window, whatever key it presents
        r = client.get("/api/v1/areas", headers=keys.header("viewer"))
        assert r.status_code == 429


def test_throttle_counts_per_address_and_per_key() -> None:
    now = [0.0]
    t = AuthThrottle(3, 60.0, clock=lambda: now[0])
    for i in range(3):
        assert t.retry_after(f"10.0.0.{i}", "cok_victim") is None
        t.failed(f"10.0.0.{i}", "cok_victim")
    # three addresses, one key: the key is locked, another key from a fresh address is not
    assert t.retry_after("10.0.0.9", "cok_victim") == pytest.approx(60.0)
    assert t.retry_after("10.0.0.9", "cok_other") is None
    now[0] = 61.0
    assert t.retry_after("10.0.0.9", "cok_victim") is None


def test_security_headers_on_every_response(migrated_db: str, keys: Keys) -> None:
    with _app(migrated_db) as client:
        for r in (
            client.get("/api/v1/areas", headers=keys.header("viewer")),
            client.get("/api/v1/areas"),  # 401
            client.get("/healthz"),
        ):
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            assert r.headers["cache-control"] == "no-store"
        page = client.get("/")
        assert page.headers["x-frame-options"] == "DENY"
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp


def test_metrics_and_docs_need_a_key_in_production(migrated_db: str, keys: Keys) -> None:
    with _app(migrated_db, environment="production") as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=keys.header("viewer")).status_code == 200
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/openapi.json", headers=keys.header("viewer")).status_code == 200
        assert client.get("/docs").status_code == 401
        docs = client.get("/docs", params={"api_key": keys.viewer})
        assert docs.status_code == 200
        assert "/openapi.json?api_key=" in docs.text
    with _app(migrated_db, environment="production", metrics_public=True) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/docs").status_code == 401
    with _app(migrated_db) as client:  # development: both public unless set
        assert client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_put_device_applies_the_device_id_rule(migrated_db: str, keys: Keys) -> None:
    new = {"kind": "manhole", "area_code": "CY-CW", "attributes": {"owner_unit": "gas"}}
    with _app(migrated_db) as client:
        h = keys.header("admin")
        for bad in ("MH%209", "MH%2B9", "MH%239", "cityops-ingest"):
            r = client.put(f"/api/v1/devices/{bad}", json=new, headers=h)
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["error"]["message"].startswith("device_id: ")
        r = client.put("/api/v1/devices/MH-9", json={**new, "gateway_id": "GW 1"}, headers=h)
        assert r.status_code == 422
        assert r.json()["error"]["detail"] == {"field": "gateway_id"}
        assert client.put("/api/v1/devices/MH-9", json=new, headers=h).status_code == 200

"""/healthz, /readyz (database and broker, 503 naming the one that failed) and /metrics."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from cityops import heartbeat
from tests.conftest import Broker, free_port
from tests.integration.api.conftest import Keys, api_settings, seed_alert

pytestmark = pytest.mark.pg


def test_healthz_needs_nothing(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


@pytest.mark.mqtt
def test_ready_with_database_and_broker(migrated_db: str, mqtt_broker: Broker) -> None:
    settings = api_settings(migrated_db, mqtt_port=mqtt_broker.port)
    with TestClient(create_app(settings)) as client:
        r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "database": True,
        "broker": True,
        "consumers": {},
        "errors": {},
    }


@pytest.mark.mqtt
def test_readiness_follows_the_consumers_progress(migrated_db: str, mqtt_broker: Broker) -> None:
    """ingest's stream core and alert engine store a heartbeat; a stale one means not ready."""
    settings = api_settings(migrated_db, mqtt_port=mqtt_broker.port)
    limit = settings.stream.max_lag_s
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        heartbeat.write(conn, "stream/0of1")
        heartbeat.write(conn, "alerts/0of1")
        with TestClient(create_app(settings)) as client:
            r = client.get("/readyz")
            assert r.status_code == 200, r.text
            assert set(r.json()["consumers"]) == {"stream/0of1", "alerts/0of1"}
            # the stream core stopped writing progress (its database connection died)
            conn.execute(
                "UPDATE consumer_heartbeat SET beat_at = now() - make_interval(secs => %s) "
                "WHERE consumer = 'stream/0of1'",
                (limit + 5,),
            )
            r = client.get("/readyz")
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["consumers"]["stream/0of1"]["stale"] is True
            assert body["consumers"]["alerts/0of1"]["stale"] is False
            assert "stream/0of1" in body["errors"]["consumers"]
            # ... it caught up but reports a lag above the limit: still not ready
            heartbeat.write(conn, "stream/0of1", lag_s=limit + 1)
            assert client.get("/readyz").status_code == 503
            # caught up; or stopped on purpose: ready
            heartbeat.write(conn, "stream/0of1", lag_s=0.0)
            assert client.get("/readyz").status_code == 200
            heartbeat.write(conn, "alerts/0of1", stopped=True)
            conn.execute("UPDATE consumer_heartbeat SET beat_at = now() - interval '1 day'")
            r = client.get("/readyz")
            assert r.status_code == 503  # the stream row is stale, the stopped one is not
            assert r.json()["consumers"]["alerts/0of1"] == {
                "age_s": r.json()["consumers"]["alerts/0of1"]["age_s"],
                "lag_s": 0.0,
                "stopped": True,
                "stale": False,
            }


def test_not_ready_without_broker(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["database"] is True
    assert body["broker"] is False
    assert "Connection refused" in body["errors"]["broker"]


@pytest.mark.mqtt
def test_not_ready_without_database(mqtt_broker: Broker) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/cityops"
    with TestClient(create_app(api_settings(dead, mqtt_port=mqtt_broker.port))) as client:
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["database"] is False
        assert r.json()["broker"] is True
        assert "database" in r.json()["errors"]
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics").text
    assert "cityops_api_database_up 0.0" in metrics


def test_metrics_count_requests_and_read_the_database(
    client: TestClient, keys: Keys, migrated_db: str
) -> None:
    seed_alert(migrated_db)
    seed_alert(migrated_db, state="pending", severity="warning")
    client.get("/api/v1/alerts/12345", headers=keys.header("viewer"))
    client.get("/api/v1/areas", headers=keys.header("viewer"))
    client.get("/api/v1/areas")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    route = "/api/v1/alerts/{alert_id}"
    assert f'cityops_api_requests_total{{method="GET",route="{route}",status="404"}} 1.0' in text
    assert 'cityops_api_requests_total{method="GET",route="/api/v1/areas",status="200"} 1.0' in text
    assert 'cityops_api_requests_total{method="GET",route="/api/v1/areas",status="401"} 1.0' in text
    assert "cityops_api_request_duration_seconds_bucket" in text
    assert "cityops_api_database_up 1.0" in text
    assert 'cityops_alerts_open{severity="critical",state="firing"} 1.0' in text
    assert 'cityops_alerts_open{severity="warning",state="pending"} 1.0' in text
    assert 'cityops_alerts_firing_unacknowledged{severity="critical"} 1.0' in text
    assert "cityops_dead_letters_last_hour 0.0" in text
    assert 'cityops_notifications_undelivered{status="failed"} 0.0' in text
    assert "cityops_notifications_given_up_last_hour 0.0" in text
    assert "cityops_api_keys_active 3.0" in text
    assert 'cityops_cases_open{stage="detected"} 0.0' in text


def test_openapi_is_published(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/v1/areas",
        "/api/v1/devices/{device_id}/latest",
        "/api/v1/readings/buckets",
        "/api/v1/rates",
        "/api/v1/alerts/{alert_id}/ack",
        "/api/v1/silences/{silence_id}",
        "/api/v1/cases/{case_id}/transitions",
        "/api/v1/complaints",
    ):
        assert path in paths
    assert set(schema["components"]["securitySchemes"]) == {
        "HTTPBearer",
        "APIKeyHeader",
        "APIKeyQuery",
    }
    assert client.get("/docs").status_code == 200


def test_unknown_path_and_method_use_the_error_body(client: TestClient) -> None:
    r = client.get("/api/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = client.delete("/api/v1/areas")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"

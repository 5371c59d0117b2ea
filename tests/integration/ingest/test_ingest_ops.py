"""What operators use: /readyz and /metrics, the dead-letter commands, broker credentials."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from cityops.broker_auth import device_password
from ingest.health import HealthServer
from tests.integration.ingest.conftest import (
    DEVICES,
    GATEWAYS,
    SECRET,
    Publisher,
    Runner,
    count,
    wait_for,
)

pytestmark = [pytest.mark.pg, pytest.mark.mqtt]

T0 = 1_735_689_600_000


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _cli(
    dsn: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    full["CITYOPS_DB_DSN"] = dsn
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cityops", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        check=False,
    )


def test_readyz_and_metrics(runner: Runner, publishers: Callable[..., Publisher]) -> None:
    service = runner.start()
    health = HealthServer("127.0.0.1", 0, service.metrics.registry, service.readiness)
    health.start()
    try:
        status, body = _get(health.port, "/readyz")
        assert status == 200, body
        assert json.loads(body)["database"] is True
        assert _get(health.port, "/healthz")[0] == 200
        pub = publishers("HT-1")
        pub.publish(
            "cityops/v1/heating/HT-1/telemetry",
            json.dumps([{"ts": T0 + i, "values": {"temperature_c": 20}} for i in range(4)]),
        )
        pub.publish("cityops/v1/heating/HT-1/telemetry", b"][")
        assert wait_for(lambda: count(runner.dsn, "SELECT count(*) FROM dead_letters") == 1)
        metrics = _get(health.port, "/metrics")[1]
        assert 'cityops_ingest_rows_stored_total{kind="heating"} 4.0' in metrics
        assert 'cityops_ingest_dead_letters_total{reason="malformed json"} 1.0' in metrics
        assert "cityops_ingest_messages_received_total 2.0" in metrics
        assert "cityops_ingest_commit_seconds_count" in metrics
        assert "cityops_ingest_queue_depth" in metrics
        # the broker goes away: not ready
        runner.broker.proc.terminate()
        runner.broker.proc.wait(10)
        assert wait_for(lambda: _get(health.port, "/readyz")[0] == 503, 15)
        assert json.loads(_get(health.port, "/readyz")[1])["broker"] is False
    finally:
        health.close()


@pytest.mark.slow
def test_deadletters_list_show_replay(runner: Runner, publishers: Callable[..., Publisher]) -> None:
    runner.start()
    dsn = runner.dsn
    publishers("SL-NEW").publish(
        "cityops/v1/streetlight/SL-NEW/telemetry",
        json.dumps({"ts": T0, "values": {"power_state": "on"}}),
    )
    publishers("HT-1").publish(
        "cityops/v1/heating/HT-1/telemetry", json.dumps({"ts": T0, "values": {"temperature_c": 99}})
    )
    assert wait_for(lambda: count(dsn, "SELECT count(*) FROM dead_letters") == 2)
    with psycopg.connect(dsn) as conn:
        ids = dict(conn.execute("SELECT reason, id FROM dead_letters").fetchall())

    r = _cli(dsn, "deadletters", "list", "--json")
    assert r.returncode == 0, r.stderr
    listed = [json.loads(line) for line in r.stdout.splitlines()]
    assert {d["reason"]: d["id"] for d in listed} == ids
    assert all(d["replay_result"] is None for d in listed)
    r = _cli(dsn, "deadletters", "list", env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert "unknown device" in r.stdout
    r = _cli(dsn, "deadletters", "show", str(ids["unknown device"]))
    assert r.returncode == 0, r.stderr
    assert '"power_state":"on"' in r.stdout.replace(" ", "")
    assert "cityops/v1/streetlight/SL-NEW/telemetry" in r.stdout

    # replay before the registry is fixed: rejected again, recorded
    r = _cli(dsn, "deadletters", "replay", str(ids["unknown device"]))
    assert r.returncode == 1
    assert "rejected again: unknown device" in r.stdout
    # fix the registry, replay by reason: stored, recorded, and a second replay adds nothing
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, area_code) "
            "SELECT 'SL-NEW', 'streetlight', min(code) FROM areas"
        )
    r = _cli(dsn, "deadletters", "replay", "--reason", "unknown device")
    assert r.returncode == 0, r.stdout + r.stderr
    assert count(dsn, "SELECT count(*) FROM streetlight_readings WHERE device_id = 'SL-NEW'") == 1
    with psycopg.connect(dsn) as conn:
        (result,) = conn.execute(
            "SELECT replay_result FROM dead_letters WHERE id = %s", (ids["unknown device"],)
        ).fetchone()  # type: ignore[misc]
    assert result.startswith("stored: 1 new reading")
    r = _cli(dsn, "deadletters", "replay", str(ids["unknown device"]))
    assert r.returncode == 0
    assert "0 new reading(s), 1 already stored" in r.stdout
    assert count(dsn, "SELECT count(*) FROM streetlight_readings WHERE device_id = 'SL-NEW'") == 1
    # the out-of-range reading stays rejected
    r = _cli(dsn, "deadletters", "replay", str(ids["validation"]))
    assert r.returncode == 1
    assert "rejected again: validation" in r.stdout
    assert count(dsn, "SELECT count(*) FROM dead_letters") == 2


def test_broker_credentials_command(ingest_db: str, tmp_path: Path) -> None:
    out = tmp_path / "creds"
    # a row that predates the device id rule (issue 16 item 6) must not block the fleet
    with psycopg.connect(ingest_db) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, area_code) "
            "SELECT 'bad id/#', 'streetlight', min(code) FROM areas"
        )
    r = _cli(
        ingest_db,
        "broker",
        "credentials",
        "--out",
        str(out),
        "--service-password",
        "cityops-ingest=s3cret",
        env={"CITYOPS_MQTT_DEVICE_SECRET": SECRET},
    )
    assert r.returncode == 0, r.stderr
    assert "refused 'bad id/#'" in r.stderr
    lines = (out / "passwd").read_text().splitlines()
    devices = {line.split(":", 1)[0] for line in lines}
    assert devices == {*DEVICES, *GATEWAYS, "cityops-hotline"}  # the device listener's logins
    lines += (out / "passwd-services").read_text().splitlines()
    users = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in lines}
    assert set(users) == {
        *DEVICES,
        *GATEWAYS,
        "cityops-ingest",
        "cityops-hotline",
        "cityops-publisher",
        "cityops-api",
        "cityops-monitor",
    }

    def verify(user: str, password: str) -> bool:
        _, _, iterations, salt, digest = users[user].split("$")
        computed = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt), int(iterations)
        )
        return base64.b64encode(computed).decode() == digest

    assert verify("SL-2", device_password(SECRET, "SL-2"))
    assert not verify("SL-2", device_password(SECRET, "SL-3"))
    assert verify("cityops-ingest", "s3cret")
    generated = dict(
        line.split("=", 1) for line in (out / "service-passwords.txt").read_text().splitlines()
    )
    assert set(generated) == {
        "cityops-hotline",
        "cityops-publisher",
        "cityops-api",
        "cityops-monitor",
    }
    assert verify("cityops-api", generated["cityops-api"])
    assert oct((out / "passwd").stat().st_mode & 0o777) == "0o600"
    assert "pattern write cityops/v1/+/%u/telemetry" in (out / "acl").read_text()

    r = _cli(ingest_db, "broker", "credentials", "--out", str(out))
    assert r.returncode == 2
    assert "device_secret" in r.stderr

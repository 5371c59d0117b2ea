"""`cityops keys create|list|revoke` and `cityops api` as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import free_port, wait_for_port

pytestmark = pytest.mark.pg


def _env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env["CITYOPS_DB_DSN"] = dsn
    return env


def _run(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cityops", *args],
        capture_output=True,
        text=True,
        env=_env(dsn),
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_keys_create_list_revoke(migrated_db: str) -> None:
    r = _run(migrated_db, "keys", "create", "--name", "grafana", "--role", "viewer")
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert key.startswith("cok_")
    assert len(key) > 40
    assert "not shown again" in r.stderr
    r = _run(migrated_db, "keys", "create", "--name", "grafana", "--role", "viewer")
    assert r.returncode == 1
    assert "already exists" in r.stderr
    r = _run(migrated_db, "keys", "create", "--name", "x", "--role", "root")
    assert r.returncode == 2
    r = _run(migrated_db, "keys", "list", "--json")
    (listed,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert listed["name"] == "grafana"
    assert listed["role"] == "viewer"
    assert listed["prefix"] == key[:12]
    assert listed["revoked_at"] is None
    assert key not in r.stdout
    r = _run(migrated_db, "keys", "revoke", "grafana")
    assert r.returncode == 0, r.stderr
    r = _run(migrated_db, "keys", "revoke", "grafana")
    assert r.returncode == 1
    assert "already revoked" in r.stderr
    r = _run(migrated_db, "keys", "revoke", "999")
    assert r.returncode == 1
    assert "there is no key" in r.stderr
    r = _run(migrated_db, "keys", "list", "--json", "--no-revoked")
    assert r.stdout.strip() == ""


@pytest.mark.slow
def test_api_process_serves_and_stops_on_sigterm(migrated_db: str) -> None:
    r = _run(migrated_db, "keys", "create", "--name", "ops", "--role", "viewer")
    key = r.stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cityops", "api", "--port", str(port)],
        env=_env(migrated_db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for_port(port, 30), proc.stderr.read() if proc.poll() is not None else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert json.load(resp) == {"status": "ok"}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/areas/CY-JW", headers={"X-API-Key": key}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - http to the test
            assert json.load(resp)["name_zh"] == "建外街道"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught, as a process should.
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "api_stopped" in err
    assert f"cityops API on http://127.0.0.1:{port}" in err

"""deploy/compose.yaml: it parses, references only files that exist, every service is supervised,
secrets come from deploy/.env, and the placeholder secrets refuse to start in production."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cityops.errors import ConfigError
from cityops.settings import load_settings
from tests.integration.deploy.conftest import (
    DEPLOY,
    ROOT,
    filled_env,
    interpolate,
    read_env_file,
    variables,
)

IMAGES = {
    "db": "timescale/timescaledb:",
    "mosquitto": "eclipse-mosquitto:2.",
    "prometheus": "prom/prometheus:",
    "grafana": "grafana/grafana",
    "alertmanager": "prom/alertmanager:",
}
CITYOPS_PROCESSES = {"ingest": ["ingest"], "api": ["api"]}


def _one_shot(compose: dict[str, Any]) -> set[str]:
    """Services others wait for with service_completed_successfully (jobs, not daemons)."""
    jobs = set()
    for svc in compose["services"].values():
        for name, cond in (svc.get("depends_on") or {}).items():
            if cond.get("condition") == "service_completed_successfully":
                jobs.add(name)
    return jobs


def test_services_images_and_supervision(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, prefix in IMAGES.items():
        assert services[name]["image"].startswith(prefix), name
    # TimescaleDB on PostgreSQL 15 or newer
    pg = int(services["db"]["image"].rsplit("-pg", 1)[1])
    assert pg >= 15
    for name, cmd in CITYOPS_PROCESSES.items():
        assert services[name]["command"] == cmd
        assert services[name]["image"] == services["migrate"]["image"]
    jobs = _one_shot(compose)
    assert jobs == {"migrate", "broker-credentials"}
    for name, svc in services.items():
        assert "restart" in svc, f"{name} has no restart policy"
        if name in jobs:
            assert svc["restart"].startswith("on-failure"), name
            continue
        assert svc["restart"] in ("unless-stopped", "always"), name
        check = svc.get("healthcheck")
        assert check, f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name
    # the processes wait for what they need to be healthy, not merely started
    for name in ("ingest", "api"):
        deps = services[name]["depends_on"]
        assert deps["mosquitto"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"


def _bind_sources(compose: dict[str, Any]) -> list[tuple[str, Path]]:
    named = set(compose.get("volumes") or {})
    found = []
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol["source"]
            if source in named:
                continue
            assert source.startswith("."), f"{name}: {source} is neither a named volume nor ./"
            found.append((name, (DEPLOY / source).resolve()))
    return found


def test_every_mounted_or_built_file_exists(compose: dict[str, Any]) -> None:
    mounts = _bind_sources(compose)
    assert len(mounts) >= 7
    for service, path in mounts:
        assert path.exists(), f"{service} mounts {path}, which does not exist"
    build = compose["services"]["migrate"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).is_file()
    named = set(compose["volumes"])
    used = {
        v.split(":", 1)[0]
        for svc in compose["services"].values()
        for v in svc.get("volumes", [])
        if not v.startswith(".")
    }
    assert used == named, "every named volume is declared and used"


def test_mosquitto_runs_the_project_config(compose: dict[str, Any]) -> None:
    svc = compose["services"]["mosquitto"]
    conf = svc["command"][svc["command"].index("-c") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    assert mounts[conf] == "./mosquitto/mosquitto.conf"
    text = (DEPLOY / "mosquitto/mosquitto.conf").read_text(encoding="utf-8")
    # the files the config names live on the volumes the compose file mounts
    for line in text.splitlines():
        word, _, value = line.partition(" ")
        if word in ("password_file", "acl_file"):
            assert value.startswith("/mosquitto/config/")
        if word == "persistence_location":
            assert value.startswith("/mosquitto/data")
    assert mounts["/mosquitto/config"] == "mosquitto-auth"
    assert mounts["/mosquitto/data"] == "mosquitto-data"
    creds = compose["services"]["broker-credentials"]
    assert "/mosquitto/config" in creds["command"]
    assert any(v.startswith("mosquitto-auth:/mosquitto/config") for v in creds["volumes"])


def test_secrets_come_from_the_env_file(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    used = variables(text)
    assert used <= set(env_example) | {"DB_MEMORY"}, used - set(env_example)
    secrets = {k for k, v in env_example.items() if v == "CHANGE_ME"}
    assert len(secrets) >= 9
    assert secrets <= used, "every secret of .env.example is used"
    # no literal passwords in the compose file: secret-looking keys take a variable
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if any(w in key for w in ("PASSWORD", "SECRET")):
                assert "${" in str(value), f"{name}: {key} is not taken from deploy/.env"
    # the preflight job sees every secret
    migrate_env = compose["services"]["migrate"]["environment"]
    passed = {n for v in migrate_env.values() for n in variables(str(v))}
    assert secrets <= passed


def _resolved_env(compose: dict[str, Any], service: str, env: dict[str, str]) -> dict[str, str]:
    raw = compose["services"][service]["environment"]
    return {k: interpolate(str(v), env) for k, v in raw.items()}


def test_cityops_services_settings_load_once_secrets_are_set(
    compose: dict[str, Any], env_example: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("CITYOPS_"):
            monkeypatch.delenv(key)
    for service in ("ingest", "api", "broker-credentials"):
        placeholder = _resolved_env(compose, service, env_example)
        for key, value in placeholder.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(ConfigError, match="CHANGE_ME") as err:
            load_settings()
        assert "db.dsn (CITYOPS_DB_DSN)" in str(err.value)
        assert "mqtt.device_secret (CITYOPS_MQTT_DEVICE_SECRET)" in str(err.value)
        for key, value in _resolved_env(compose, service, filled_env(env_example)).items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        assert settings.environment == "production"
        assert settings.mqtt.host == "mosquitto"
        assert settings.db.dsn.startswith("postgresql://cityops:s3cret-")
        for key in placeholder:
            monkeypatch.delenv(key)
    ingest = _resolved_env(compose, "ingest", filled_env(env_example))
    assert ingest["CITYOPS_MQTT_USERNAME"] == "cityops-ingest"
    assert ingest["CITYOPS_INGEST_HTTP_PORT"] == "9108"


def _preflight(compose: dict[str, Any]) -> list[str]:
    svc = compose["services"]["migrate"]
    assert svc["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = svc["command"]
    return ["/bin/sh", "-c", interpolate(script, {})]


def _job_env(compose: dict[str, Any], env: dict[str, str], dsn: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    out.update(_resolved_env(compose, "migrate", env))
    out["CITYOPS_DB_DSN"] = dsn  # the test database instead of the compose host "db"
    # `cityops` of this virtual environment, as the image's PATH has it
    out["PATH"] = f"{Path(sys.executable).parent}:{out.get('PATH', '')}"
    return out


@pytest.mark.pg
def test_migrate_job_refuses_placeholders_then_migrates(
    compose: dict[str, Any], env_example: dict[str, str], empty_db: str
) -> None:
    cmd = _preflight(compose)
    refused = subprocess.run(
        cmd,
        env=_job_env(compose, env_example, empty_db),
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "GRAFANA_ADMIN_PASSWORD" in refused.stderr
    assert "MQTT_MONITOR_PASSWORD" in refused.stderr
    assert "CHANGE_ME" in refused.stderr
    # one forgotten secret is enough to refuse, and it is named
    almost = filled_env(env_example) | {"GRAFANA_DB_PASSWORD": "CHANGE_ME"}
    one = subprocess.run(
        cmd, env=_job_env(compose, almost, empty_db), capture_output=True, text=True, check=False
    )
    assert one.returncode == 2
    assert "GRAFANA_DB_PASSWORD" in one.stderr
    assert "MQTT_" not in one.stderr
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('devices')").fetchone() == (None,)
    ok = subprocess.run(
        cmd,
        env=_job_env(compose, filled_env(env_example), empty_db),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('devices')").fetchone() != (None,)


def test_env_example_is_complete_and_loadable(env_example: dict[str, str]) -> None:
    assert env_example["CITYOPS_ENVIRONMENT"] == "production"
    assert read_env_file(DEPLOY / ".env.example") == env_example
    assert not (DEPLOY / ".env").exists() or (DEPLOY / ".env").stat().st_mode & 0o077 == 0, (
        "a real deploy/.env must not be readable by others"
    )


def test_prometheus_scrapes_the_compose_processes(compose: dict[str, Any]) -> None:
    import yaml

    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in prom["scrape_configs"]
    }
    ingest_port = compose["services"]["ingest"]["environment"]["CITYOPS_INGEST_HTTP_PORT"]
    api_port = compose["services"]["api"]["environment"]["CITYOPS_API_PORT"]
    assert targets["cityops-ingest"] == [f"ingest:{ingest_port}"]
    assert targets["cityops-api"] == [f"api:{api_port}"]
    am = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"]

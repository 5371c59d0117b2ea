"""Prometheus: the config and rules pass promtool (syntax and rule unit tests), the dashboards'
PromQL parses, and every metric a rule or dashboard uses is exported by a running process."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from api.app import create_app
from tests.conftest import free_port, require_tool
from tests.integration.api.conftest import api_settings
from tests.integration.deploy.conftest import DEPLOY
from tests.integration.ingest.conftest import (
    SecureBroker,
    ingest_env,
    start_ingest_process,
)
from tests.integration.ingest.test_ingest_failures import http_get, wait_ready

PROM = DEPLOY / "prometheus"
RULES = sorted((PROM / "rules").glob("*.yml"))
_METRIC = re.compile(r"\b(cityops_[a-z0-9_]+)")


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool", "prometheus")  # skips locally, fails under CI=true
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def test_rule_files_pass_promtool() -> None:
    assert RULES
    done = _promtool("check", "rules", *map(str, RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    names = {r["alert"] for f in RULES for g in _yaml(f)["groups"] for r in g["rules"]}
    # the pipeline alerts the issue asks for
    assert {
        "CityopsIngestStalled",
        "CityopsIngestLagHigh",
        "CityopsDeadLetterSpike",
        "CityopsNotificationFailures",
        "CityopsDatabaseUnreachable",
    } <= names


def test_rule_unit_tests_pass() -> None:
    """promtool test rules: ingest stalled, dead-letter spike, database, notifications."""
    tests = PROM / "tests/cityops_test.yml"
    done = _promtool("test", "rules", tests.name, cwd=tests.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    covered = {t["alertname"] for case in _yaml(tests)["tests"] for t in case["alert_rule_test"]}
    assert {"CityopsIngestStalled", "CityopsDeadLetterSpike"} <= covered


def test_config_passes_promtool_with_the_rules_it_loads(tmp_path: Path) -> None:
    config = _yaml(PROM / "prometheus.yml")
    # in the container the rules are mounted at /etc/prometheus/rules (compose.yaml)
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(PROM / "rules" / "*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = _promtool("check", "config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(RULES)} rule files found" in done.stdout + done.stderr


def _dashboard_exprs() -> list[str]:
    exprs = []
    for path in sorted((DEPLOY / "grafana/dashboards").glob("*.json")):
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            exprs += [t["expr"] for t in panel["targets"] if "expr" in t]
    return exprs


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """Each dashboard expression, as a recording rule, through promtool's parser."""
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}), "utf-8")
    done = _promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _used_metrics() -> set[str]:
    used: set[str] = set()
    for path in RULES:
        for group in _yaml(path)["groups"]:
            for rule in group["rules"]:
                used |= set(_METRIC.findall(rule["expr"]))
    for expr in _dashboard_exprs():
        used |= set(_METRIC.findall(expr))
    return used


def exported_names(exposition: str) -> set[str]:
    """Series names a Prometheus scrape of ``exposition`` yields (from its # TYPE lines)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(" ", 3)
        if kind == "counter":  # the text format names the family with or without _total
            base = name.removesuffix("_total")
            names |= {f"{base}_total", f"{base}_created"}
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        else:
            names.add(name)
    return names


@pytest.mark.pg
@pytest.mark.mqtt
@pytest.mark.slow
def test_every_metric_used_is_exported_by_a_running_process(
    ingest_db: str, secure_broker: SecureBroker, migrated_db: str, tmp_path: Path
) -> None:
    used = _used_metrics()
    assert len(used) >= 15
    # the ingest process as compose runs it: ingest + stream + alerts (notifications) in one
    port = free_port()
    env = ingest_env(ingest_db, secure_broker, "ingest-metrics", http_port=port)
    log = tmp_path / "ingest.log"
    proc = start_ingest_process(env, log)
    try:
        wait_ready(port, proc, log)
        status, ingest_text = http_get(port, "/metrics")
        assert status == 200
    finally:
        proc.terminate()
        proc.wait(60)
    # the API process (app factory, as `cityops api` serves it)
    with TestClient(create_app(api_settings(migrated_db))) as client:
        response = client.get("/metrics")
        assert response.status_code == 200
        api_text = response.text
    exported = exported_names(ingest_text) | exported_names(api_text)
    missing = sorted(used - exported)
    assert not missing, f"used by rules/dashboards but exported by no process: {missing}"
    # each process exports its own part
    assert "cityops_ingest_messages_received_total" in exported_names(ingest_text)
    assert "cityops_notification_attempts_failed_total" in exported_names(ingest_text)
    assert "cityops_api_database_up" in exported_names(api_text)

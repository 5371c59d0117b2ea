"""The broker rules (deploy/prometheus/rules/broker.yml) pass promtool and their unit tests, and
the compose stack scrapes the exporter they rely on."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require_tool

PROM = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # skips locally without promtool, fails under CI=true (as every tool a test needs)
    tool = require_tool("promtool", "prometheus")
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def test_broker_rules_pass_promtool_and_their_unit_tests() -> None:
    done = _promtool("check", "rules", str(PROM / "rules" / "broker.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    done = _promtool("test", "rules", "broker_test.yml", cwd=PROM / "tests")
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_the_broker_exporter() -> None:
    config: dict[str, Any] = yaml.safe_load((PROM / "prometheus.yml").read_text("utf-8"))
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    targets = jobs["mosquitto"]["static_configs"][0]["targets"]
    assert targets == ["mosquitto-exporter:9234"]
    compose = yaml.safe_load((PROM.parent / "compose.yaml").read_text("utf-8"))
    exporter = compose["services"]["mosquitto-exporter"]
    # the exporter logs in on the services listener with the monitor account ($SYS only)
    assert exporter["environment"]["BROKER_ENDPOINT"] == "tcp://mosquitto:1884"
    assert exporter["environment"]["MQTT_USER"] == "cityops-monitor"

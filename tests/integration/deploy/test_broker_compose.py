"""The broker as the compose stack runs it: deploy/mosquitto/mosquitto.conf with the generated
passwd/acl, its health check command, and the accounts the compose services use."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.integration.deploy.conftest import interpolate
from tests.integration.ingest.conftest import (
    INGEST_PASSWORD,
    Publisher,
    SecureBroker,
    publishers,
    wait_for,
)
from tests.integration.ingest.test_broker_security import _client

pytestmark = pytest.mark.mqtt
__all__ = ["publishers"]


def _service_passwords(broker: SecureBroker) -> dict[str, str]:
    """The passwords `cityops broker credentials` generated for accounts given none."""
    text = (broker.workdir / "service-passwords.txt").read_text(encoding="utf-8")
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def _healthcheck(compose: dict[str, Any], broker: SecureBroker) -> list[str]:
    kind, command = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = interpolate(command, {})  # compose's $$ -> $ (the shell sees $MQTT_..., $SYS)
    assert "-h 127.0.0.1 -p 1884 " in command  # the services listener
    command = command.replace("-p 1884 ", f"-p {broker.port} ")
    return ["/bin/sh", "-c", command]


def test_compose_health_check_passes_against_the_project_broker(
    compose: dict[str, Any], secure_broker: SecureBroker
) -> None:
    # the image's health check uses mosquitto_sub: skips locally without it, fails under CI=true
    require_tool("mosquitto_sub", "mosquitto-clients")
    cmd = _healthcheck(compose, secure_broker)
    monitor = _service_passwords(secure_broker)["cityops-monitor"]
    env = {**os.environ, "MQTT_MONITOR_PASSWORD": monitor}
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr + secure_broker.log()
    env["MQTT_MONITOR_PASSWORD"] = "wrong"
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode != 0
    # a device account cannot pass the health check: $SYS is for the monitor account only
    device_cmd = [*cmd[:2], cmd[2].replace("-u cityops-monitor", "-u SL-1")]
    from cityops.broker_auth import device_password
    from tests.integration.ingest.conftest import SECRET

    env["MQTT_MONITOR_PASSWORD"] = device_password(SECRET, "SL-1")
    denied = subprocess.run(
        device_cmd, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert denied.returncode != 0, "a device read $SYS"
    words = shlex.split(cmd[2])
    assert words[words.index("-W") + 1] == "5"  # it gives up instead of hanging the check


def test_ingest_account_publishes_live_and_alerts_but_not_device_topics(
    secure_broker: SecureBroker, publishers: Callable[..., Publisher]
) -> None:
    """The ingest process runs stream and alerts in process and publishes with its account."""
    api_pw = _service_passwords(secure_broker)["cityops-api"]
    watcher, state = _client(secure_broker, "cityops-api", api_pw)
    spy, spied = _client(secure_broker, "cityops-ingest", INGEST_PASSWORD)
    try:
        watcher.subscribe([("cityops/v1/live/#", 1), ("cityops/v1/alerts/#", 1)])
        spy.subscribe([("cityops/v1/+/+/telemetry", 1)])
        assert wait_for(lambda: state["granted"] is not None and spied["granted"] is not None)
        ingest = publishers("cityops-ingest", INGEST_PASSWORD)
        body = json.dumps({"values": {"power_state": "on"}})
        ingest.publish("cityops/v1/streetlight/SL-1/telemetry", body)  # spoofing a device
        ingest.publish("cityops/v1/live/CY-JW", json.dumps({"area": "CY-JW"}))
        ingest.publish("cityops/v1/alerts/streetlight/CY-JW", json.dumps({"state": "firing"}))
        assert wait_for(lambda: len(state["messages"]) >= 2, 10), secure_broker.log()
        assert [t for t, _ in state["messages"]] == [
            "cityops/v1/live/CY-JW",
            "cityops/v1/alerts/streetlight/CY-JW",
        ]
        device = publishers("SL-1")
        device.publish("cityops/v1/streetlight/SL-1/telemetry", body)
        assert wait_for(lambda: len(spied["messages"]) >= 1, 10)
        time.sleep(0.2)
        # only the device's own message: the spoofed one published earlier was refused
        assert [t for t, _ in spied["messages"]] == ["cityops/v1/streetlight/SL-1/telemetry"]
    finally:
        for c in (watcher, spy):
            c.disconnect()
            c.loop_stop()
            c._reset_sockets()  # paho's wake-up socket pair, closed now rather than at GC


def test_monitor_account_reads_broker_statistics_only(
    secure_broker: SecureBroker, publishers: Callable[..., Publisher]
) -> None:
    monitor_pw = _service_passwords(secure_broker)["cityops-monitor"]
    monitor, state = _client(secure_broker, "cityops-monitor", monitor_pw)
    try:
        monitor.subscribe([("cityops/#", 1), ("$SYS/broker/uptime", 0)])
        assert wait_for(lambda: state["granted"] is not None)
        publishers("SL-1").publish(
            "cityops/v1/streetlight/SL-1/telemetry", json.dumps({"values": {"power_state": "on"}})
        )
        assert wait_for(lambda: any(t == "$SYS/broker/uptime" for t, _ in state["messages"]), 15)
        time.sleep(0.3)
        assert all(t.startswith("$SYS/") for t, _ in state["messages"])
    finally:
        monitor.disconnect()
        monitor.loop_stop()
        monitor._reset_sockets()

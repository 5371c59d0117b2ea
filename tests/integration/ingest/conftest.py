"""Fixtures for ingest: a broker from deploy/mosquitto with auth and ACLs, devices, a runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityops.broker_auth import device_password
from cityops.settings import DatabaseSettings, IngestSettings, MqttSettings, Settings
from ingest.broker import (
    DEVICE_LISTENER_SERVICES,
    SERVICE_NAMES,
    default_config_path,
    render_config,
    write_credentials,
)
from ingest.service import IngestService
from tests.conftest import _missing as missing_service
from tests.conftest import free_port, wait_for_port

SECRET = "test-device-secret"
INGEST_PASSWORD = "ingest-pw"
HOTLINE_PASSWORD = "hotline-pw"

# Devices every ingest test can use: id -> (kind, gateway)
DEVICES: dict[str, tuple[str, str | None]] = {
    "SL-1": ("streetlight", None),
    "SL-2": ("streetlight", "GW-1"),
    "SL-3": ("streetlight", "GW-1"),
    "SL-4": ("streetlight", "GW-2"),
    "MH-1": ("manhole", None),
    "MH-2": ("manhole", "GW-1"),
    "HT-1": ("heating", None),
    "HT-2": ("heating", "GW-1"),
    "CH-1": ("charger", None),
    "CH-2": ("charger", None),
    "CH-3": ("charger", "GW-1"),
}
GATEWAYS = ("GW-1", "GW-2")
UNREGISTERED = ("SL-NEW", "HT-NEW")


@dataclass
class SecureBroker:
    """A mosquitto running the project's config, with credentials for the test devices.

    ``port`` is the services listener (ingest, API, ...), ``device_port`` the device listener.
    """

    host: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    device_port: int = 0

    def port_for(self, username: str) -> int:
        """The listener a client logging in as ``username`` uses."""
        if username in SERVICE_NAMES and username not in DEVICE_LISTENER_SERVICES:
            return self.port
        return self.device_port

    def log(self) -> str:
        """The broker's log so far (for failure messages)."""
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _start_broker(
    workdir: Path, port: int | None = None, device_port: int | None = None
) -> SecureBroker:
    write_credentials(
        workdir,
        [*DEVICES, *GATEWAYS, *UNREGISTERED],
        secret=SECRET,
        service_passwords={
            "cityops-ingest": INGEST_PASSWORD,
            "cityops-hotline": HOTLINE_PASSWORD,
        },
    )
    text = render_config(
        default_config_path().read_text(encoding="utf-8"),
        port="{device_port}",
        service_port="{port}",
        data_dir="{dir}",
        password_file=workdir / "passwd",
        acl_file=workdir / "acl",
        run_as="root" if os.geteuid() == 0 else None,
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        missing_service("mosquitto", "binary not installed")
    port = port or free_port()
    # Two free_port() calls can hand back the same port (each releases it at once); the two
    # listeners must differ or mosquitto fails with "Address already in use".
    while not device_port or device_port == port:
        device_port = free_port()
    (workdir / "mosquitto.conf").write_text(
        text.format(port=port, device_port=device_port, dir=workdir), encoding="utf-8"
    )
    with (workdir / "mosquitto.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, "-c", str(workdir / "mosquitto.conf")], stdout=log, stderr=subprocess.STDOUT
        )
    if not (wait_for_port(port) and wait_for_port(device_port)):
        proc.kill()
        pytest.fail(
            "mosquitto did not start from deploy/mosquitto/mosquitto.conf:\n"
            + ((workdir / "mosquitto.log").read_text(errors="replace"))
        )
    return SecureBroker("127.0.0.1", port, workdir, proc, device_port)


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    """A private broker from deploy/mosquitto/mosquitto.conf (auth, ACL, persistence)."""
    broker = _start_broker(tmp_path / "broker")
    try:
        yield broker
    finally:
        broker.proc.terminate()
        broker.proc.wait(timeout=10)


@pytest.fixture
def ingest_db(migrated_db: str) -> str:
    """A migrated database with the test devices registered."""
    with psycopg.connect(migrated_db) as conn:
        (area,) = conn.execute("SELECT min(code) FROM areas").fetchone()  # type: ignore[misc]
        for device_id, (kind, gateway) in DEVICES.items():
            conn.execute(
                "INSERT INTO devices (device_id, kind, area_code, gateway_id) "
                "VALUES (%s, %s, %s, %s)",
                (device_id, kind, area, gateway),
            )
    return migrated_db


def ingest_settings(dsn: str, broker: SecureBroker, **ingest: Any) -> Settings:
    """Settings for an ingest worker against ``dsn`` and ``broker``."""
    options: dict[str, Any] = {"http_port": 0, "batch_max_ms": 50, "retry_max_s": 1.0}
    options.update(ingest)
    return Settings(
        db=DatabaseSettings(dsn=dsn, connect_timeout_s=2),
        mqtt=MqttSettings(
            host=broker.host,
            port=broker.port,
            username="cityops-ingest",
            password=INGEST_PASSWORD,  # type: ignore[arg-type]
            device_secret=SECRET,  # type: ignore[arg-type]
        ),
        ingest=IngestSettings(**options),
    )


def ingest_env(dsn: str, broker: SecureBroker, client_id: str, **ingest: Any) -> dict[str, str]:
    """Environment for `python -m cityops ingest` as a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env.update(
        {
            "CITYOPS_DB_DSN": dsn,
            "CITYOPS_DB_CONNECT_TIMEOUT_S": "2",
            "CITYOPS_MQTT_HOST": broker.host,
            "CITYOPS_MQTT_PORT": str(broker.port),
            "CITYOPS_MQTT_USERNAME": "cityops-ingest",
            "CITYOPS_MQTT_PASSWORD": INGEST_PASSWORD,
            "CITYOPS_MQTT_CLIENT_ID": client_id,
            "CITYOPS_INGEST_HTTP_PORT": "0",
            "CITYOPS_LOG_FORMAT": "json",
        }
    )
    for key, value in ingest.items():
        env[f"CITYOPS_INGEST_{key.upper()}"] = str(value)
    return env


def start_ingest_process(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m cityops ingest` with its output in ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "cityops", "ingest"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@dataclass
class Runner:
    """Starts in-process ingest services and stops them at the end of the test."""

    dsn: str
    broker: SecureBroker
    services: list[IngestService] = field(default_factory=list)

    def start(self, client_id: str | None = None, **ingest: Any) -> IngestService:
        """An ingest service, started and subscribed."""
        consumers = ingest.pop("consumers", ())
        service = IngestService(
            ingest_settings(self.dsn, self.broker, **ingest),
            consumers,
            client_id=client_id or f"ingest-{uuid.uuid4().hex[:8]}",
        )
        self.services.append(service)
        service.start(wait_subscribed_s=10)
        assert service.source.connected, self.broker.log()
        return service

    def stop_all(self) -> None:
        """Stop every service still running."""
        for service in self.services:
            service.stop()
        self.services.clear()


@pytest.fixture
def runner(ingest_db: str, secure_broker: SecureBroker) -> Iterator[Runner]:
    """Run ingest services against the test database and broker."""
    r = Runner(ingest_db, secure_broker)
    try:
        yield r
    finally:
        r.stop_all()


class Publisher:
    """A device (or service) connected to the secure broker with its own credentials."""

    def __init__(self, broker: SecureBroker, username: str, password: str | None = None) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"pub-{username}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password or device_password(SECRET, username))
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.connected = False
        self.client.connect(broker.host, broker.port_for(username))
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.client.is_connected(), broker.log()

    def publish(self, topic: str, payload: bytes | str, *, wait: bool = True) -> Any:
        """Publish QoS 1; wait for the broker's PUBACK unless ``wait`` is False."""
        info = self.client.publish(topic, payload, qos=1)
        if wait:
            info.wait_for_publish(10)
        return info

    def close(self) -> None:
        """Disconnect (and close paho's wake-up socket pair now, not whenever GC gets to it)."""
        self.client.disconnect()
        self.client.loop_stop()
        reset = getattr(self.client, "_reset_sockets", None)
        if reset is not None:
            reset()


@pytest.fixture
def publishers(secure_broker: SecureBroker) -> Iterator[Callable[..., Publisher]]:
    """Open publishers for devices; all are closed at the end."""
    opened: list[Publisher] = []

    def open_(username: str, password: str | None = None) -> Publisher:
        p = Publisher(secure_broker, username, password)
        opened.append(p)
        return p

    yield open_
    for p in opened:
        p.close()


def wait_for(check: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Poll ``check`` until it holds (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def count(dsn: str, query: str, *args: Any) -> int:
    """A single integer from the database."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, args).fetchone()
    assert row is not None
    return int(row[0])

"""Publishing through a real mosquitto: messages arrive on the documented topics and validate."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityops import catalog
from cityops.broker_auth import device_password
from cityops.catalog import Kind
from simulators import runner, scenario
from simulators.engine import Simulation
from simulators.messages import encode
from simulators.publisher import Publisher, PublisherConfig, PublishError
from tests.conftest import Broker, start_mosquitto
from tests.unit.simulators.stream import decode_raw

pytestmark = pytest.mark.mqtt

START = datetime(2025, 12, 10, 9, 0, tzinfo=UTC)  # 17:00 in Beijing: lamps switch on


class Collector:
    """A subscriber that keeps every message it receives."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        auth: tuple[str, str] | None = None,
        *,
        clean_session: bool = True,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"col-{uuid.uuid4().hex[:8]}",
            clean_session=clean_session,
        )
        if auth:
            self.client.username_pw_set(*auth)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.ready.wait(10), "subscription not acknowledged"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def wait_for(self, n: int, timeout: float = 30.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    break
            time.sleep(0.05)
        time.sleep(0.2)  # anything beyond n would be a duplicate or a stray; let it show
        with self.lock:
            return list(self.messages)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _sim(devices: int = 200, hours: float = 1.0, rate: float = 0.0) -> Simulation:
    scn = scenario.generate(scenario.scenario_spec("pilot", devices=devices), seed=21)
    return Simulation(scn, start=START, duration=timedelta(hours=hours), fault_rate=rate)


def test_shared_connection_delivers_every_message(mqtt_broker: Broker) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}/v1"
    sim = _sim(hours=2)
    expected = [(m.topic, m.payload) for out in _sim(hours=2).ticks() for m in encode(out, prefix)]
    collector = Collector(mqtt_broker.host, mqtt_broker.port, f"{prefix}/#")
    publisher = Publisher(
        PublisherConfig(
            host=mqtt_broker.host,
            port=mqtt_broker.port,
            prefix=prefix,
            client_id=f"sim-{uuid.uuid4().hex[:6]}",
        )
    )
    try:
        publisher.connect()
        progress = runner.run(sim, runner.MqttSink(publisher), speed=0, prefix=prefix)
        assert publisher.flush(30)
        received = collector.wait_for(len(expected))
    finally:
        publisher.close()
        collector.stop()
    assert progress.messages == len(expected) == publisher.stats.acked
    assert Counter(received) == Counter(expected)
    stream = decode_raw(received, prefix)
    kinds = Counter(r.kind for r in stream.readings)
    assert set(kinds) == {k.value for k in Kind}
    for r in stream.readings:
        catalog.KINDS[Kind(r.kind)].validate_values(r.values)
    assert any(r.via_gateway for r in stream.readings)
    assert {t.split("/")[2] for t in stream.topics} >= {
        "streetlight",
        "gateway",
        "manhole",
        "heating",
        "charger",
    }
    assert sum(1 for s in stream.statuses if s[2]) == sim.scenario.total  # one birth each


def test_rate_limit_spaces_messages(mqtt_broker: Broker) -> None:
    publisher = Publisher(
        PublisherConfig(
            host=mqtt_broker.host,
            port=mqtt_broker.port,
            prefix="ratetest",
            max_rate=200,
            client_id=f"sim-{uuid.uuid4().hex[:6]}",
        )
    )
    publisher.connect()
    sim = _sim(devices=60, hours=0.1)
    t0 = time.monotonic()
    progress = runner.run(sim, runner.MqttSink(publisher), speed=0, prefix="ratetest")
    elapsed = time.monotonic() - t0
    publisher.close()
    # Behaviour, not speed: n messages at 200/s cannot leave in less than (n - 1) / 200 s.
    assert progress.messages > 50
    assert elapsed >= (progress.messages - 1) / 200


AUTH_CONF = """\
listener {port} 127.0.0.1
allow_anonymous false
password_file {dir}/passwd
acl_file {dir}/acl
persistence false
"""
ACL = """\
user watcher
topic read #

user hotline
topic write cityops/v1/hotline/+/complaints

pattern write cityops/v1/+/%u/telemetry
pattern write cityops/v1/+/%u/status
"""


def _auth_broker(tmp_path: Path, users: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    passwd = tmp_path / "passwd"
    passwd.write_text("".join(f"{u}:{p}\n" for u, p in users.items()), encoding="utf-8")
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
    (tmp_path / "acl").write_text(ACL, encoding="utf-8")
    # As root, mosquitto drops to its own user, which cannot read pytest's private tmp folder.
    conf = AUTH_CONF + ("user root\n" if os.geteuid() == 0 else "")
    return start_mosquitto(conf, tmp_path)


def test_per_device_logins_under_acls_and_last_will(tmp_path: Path) -> None:
    spec = scenario.ScenarioSpec(
        name="tiny",
        mains_lamps=4,
        solar_lamps=2,
        manholes=2,
        heating=2,
        chargers=2,
        lamps_per_cabinet=4,
    )
    scn = scenario.generate(spec, seed=5)
    sim = Simulation(scn, start=START, duration=timedelta(minutes=30))
    direct, gateways = runner.device_list(sim)
    secret = "s3cret-for-tests"
    users = {d: device_password(secret, d) for _, d in direct}
    users.update({g: device_password(secret, g) for g in gateways})
    users.update({"watcher": "w", "hotline": "h"})
    proc, port = _auth_broker(tmp_path, users)
    try:
        collector = Collector("127.0.0.1", port, "cityops/v1/#", auth=("watcher", "w"))
        publisher = Publisher(
            PublisherConfig(
                port=port, mode="per_device", device_secret=secret, username="hotline", password="h"
            )
        )
        publisher.connect(direct, gateways)
        progress = runner.run(sim, runner.MqttSink(publisher), speed=0, prefix="cityops/v1")
        assert publisher.flush(20)
        # Lamps behind the cabinet have no login: their births are skipped, their readings
        # travel in the cabinet's gateway messages.
        expected = progress.messages - publisher.stats.skipped
        assert publisher.stats.skipped == 4
        received = collector.wait_for(expected)
        assert len(received) == expected
        stream = decode_raw(received)
        assert {r.device_id for r in stream.readings} == {
            str(d) for t in scn.tables.values() for d in t.device_id
        }
        assert {
            r.via_gateway for r in stream.readings if r.kind == "streetlight" and r.via_gateway
        } == set(gateways)
        # An unclean drop makes the broker publish the device's last will.
        victim = direct[0][1]
        sock = publisher._clients[victim].socket()
        sock.shutdown(socket.SHUT_RDWR)
        will_topic = f"cityops/v1/{direct[0][0].value}/{victim}/status"
        got = collector.wait_for(expected + 1, timeout=10)
        assert (will_topic, b'{"online":false}') in got[expected:]
        publisher.close()
        collector.stop()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_wrong_secret_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    proc, port = _auth_broker(tmp_path, {"mh-00001": device_password("right", "mh-00001")})
    try:
        publisher = Publisher(PublisherConfig(port=port, mode="per_device", device_secret="wrong"))
        with pytest.raises(PublishError, match="refused"):
            publisher.connect([(Kind.MANHOLE, "mh-00001")])
        publisher.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_per_device_mode_needs_a_secret() -> None:
    with pytest.raises(PublishError, match="device_secret"):
        Publisher(PublisherConfig(mode="per_device"))


def test_broker_restart_loses_nothing(tmp_path: Path) -> None:
    from tests.conftest import PLAIN_BROKER_CONF, wait_for_port

    workdir = tmp_path / "broker"
    # The broker must be able to save its state on shutdown: as root it would otherwise drop to
    # its own user, which cannot write pytest's private tmp folder.
    conf = PLAIN_BROKER_CONF
    proc, port = start_mosquitto(conf, workdir)
    prefix = f"r{uuid.uuid4().hex[:8]}/v1"
    collector = None
    publisher = None
    try:
        # A persistent subscriber session, so the broker keeps queueing for it across the restart.
        collector = Collector("127.0.0.1", port, f"{prefix}/#", clean_session=False)
        publisher = Publisher(PublisherConfig(port=port, prefix=prefix, client_id="sim-restart"))
        publisher.connect()
        messages = [m for out in _sim(devices=120, hours=1).ticks() for m in encode(out, prefix)]
        half = len(messages) // 2
        publisher.publish_all(messages[:half])
        assert publisher.flush(20)
        proc.terminate()
        proc.wait(timeout=10)
        publisher.publish_all(messages[half : half + 50])  # queued while the broker is down
        proc = subprocess.Popen(
            ["/usr/sbin/mosquitto", "-c", str(workdir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for_port(port)
        publisher.publish_all(messages[half + 50 :])
        assert publisher.flush(30), publisher.stats
        received = collector.wait_for(len(messages), timeout=30)
        assert set(received) == {(m.topic, m.payload) for m in messages}  # QoS 1: duplicates ok
        assert publisher.stats.disconnects >= 1
    finally:
        if publisher is not None:
            publisher.close()
        if collector is not None:
            collector.stop()
        proc.terminate()
        proc.wait(timeout=10)

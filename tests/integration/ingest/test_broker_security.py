"""The broker config in deploy/mosquitto: password authentication and ACLs."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityops.broker_auth import device_password
from tests.integration.ingest.conftest import (
    INGEST_PASSWORD,
    SECRET,
    Publisher,
    SecureBroker,
    wait_for,
)

pytestmark = pytest.mark.mqtt


def _client(broker: SecureBroker, user: str, password: str) -> tuple[mqtt.Client, dict[str, Any]]:
    state: dict[str, Any] = {"messages": [], "granted": None}
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(user, password)

    def on_connect(c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        state["connect"] = reason

    def on_subscribe(c: Any, u: Any, mid: int, reasons: Any, p: Any) -> None:
        state["granted"] = reasons

    def on_message(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        state["messages"].append((m.topic, m.payload))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(broker.host, broker.port_for(user))
    client.loop_start()
    assert wait_for(lambda: "connect" in state, 10)
    return client, state


def test_wrong_password_is_refused(secure_broker: SecureBroker) -> None:
    client, state = _client(secure_broker, "SL-1", "not-the-password")
    try:
        assert state["connect"].is_failure
    finally:
        client.loop_stop()


def test_device_writes_only_its_own_topics(
    secure_broker: SecureBroker, publishers: Callable[..., Publisher]
) -> None:
    watcher, state = _client(secure_broker, "cityops-ingest", INGEST_PASSWORD)
    try:
        assert not state["connect"].is_failure
        watcher.subscribe(
            [
                ("cityops/v1/+/+/telemetry", 1),
                ("cityops/v1/+/+/status", 1),
                ("cityops/v1/hotline/+/complaints", 1),
            ]
        )
        assert wait_for(lambda: state["granted"] is not None, 10)
        assert not any(r.is_failure for r in state["granted"])

        device = publishers("SL-1")
        body = json.dumps({"values": {"power_state": "on"}})
        denied = [
            "cityops/v1/streetlight/SL-2/telemetry",  # another device
            "cityops/v1/gateway/GW-1/telemetry",  # a gateway
            "cityops/v1/hotline/12345/complaints",  # complaints
            "cityops/v1/streetlight/SL-2/status",
        ]
        for topic in denied:
            device.publish(topic, body)
        device.publish("cityops/v1/streetlight/SL-1/status", json.dumps({"online": True}))
        device.publish("cityops/v1/streetlight/SL-1/telemetry", body)
        # messages from one connection arrive in order: once the last allowed one is here,
        # a denied one would have been delivered before it
        assert wait_for(lambda: len(state["messages"]) >= 2, 10)
        time.sleep(0.2)
        assert [t for t, _ in state["messages"]] == [
            "cityops/v1/streetlight/SL-1/status",
            "cityops/v1/streetlight/SL-1/telemetry",
        ]
    finally:
        watcher.disconnect()
        watcher.loop_stop()


def test_device_cannot_read_and_gateway_writes_its_own_topic(
    secure_broker: SecureBroker, publishers: Callable[..., Publisher]
) -> None:
    spy, spy_state = _client(secure_broker, "SL-1", device_password(SECRET, "SL-1"))
    watcher, state = _client(secure_broker, "cityops-ingest", INGEST_PASSWORD)
    try:
        spy.subscribe("cityops/v1/#", 1)
        watcher.subscribe("$share/ingest/cityops/v1/+/+/telemetry", 1)
        assert wait_for(lambda: spy_state["granted"] is not None and state["granted"], 10)
        # mosquitto may grant the subscription; the read ACL still delivers it nothing
        assert not any(r.is_failure for r in state["granted"])
        gw = publishers("GW-1")
        gw.publish("cityops/v1/gateway/GW-2/telemetry", "{}")  # not its own id: denied
        gw.publish("cityops/v1/gateway/GW-1/telemetry", "{}")
        assert wait_for(lambda: len(state["messages"]) >= 1, 10)
        time.sleep(0.2)
        assert [t for t, _ in state["messages"]] == ["cityops/v1/gateway/GW-1/telemetry"]
        assert spy_state["messages"] == []
    finally:
        for c in (spy, watcher):
            c.disconnect()
            c.loop_stop()


def test_broker_config_keeps_queued_messages_across_a_broker_restart(
    secure_broker: SecureBroker, publishers: Callable[..., Publisher]
) -> None:
    """Persistence on: a stopped subscriber's queue survives a broker restart."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from tests.integration.ingest.conftest import _start_broker

    client_id = f"persist-{uuid.uuid4().hex[:6]}"
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600

    def session(broker: SecureBroker) -> tuple[mqtt.Client, list[bytes], threading.Event]:
        got: list[bytes] = []
        ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.username_pw_set("cityops-ingest", INGEST_PASSWORD)
        c.on_message = lambda cl, u, m: got.append(m.payload)
        c.on_subscribe = lambda *a: ready.set()
        c.on_connect = lambda cl, *a: ready.set()
        c.connect(broker.host, broker.port, clean_start=False, properties=props)
        c.loop_start()
        return c, got, ready

    c, _, ready = session(secure_broker)
    assert ready.wait(10)
    ready.clear()
    c.subscribe("cityops/v1/+/+/telemetry", 1)
    assert ready.wait(10)
    c.disconnect()
    c.loop_stop()
    pub = publishers("HT-1")
    for i in range(5):
        pub.publish("cityops/v1/heating/HT-1/telemetry", json.dumps({"n": i}))
    pub.close()
    # restart the broker on the same folder (same port is not needed: a new process, same data)
    secure_broker.proc.terminate()
    secure_broker.proc.wait(10)
    restarted = _start_broker(secure_broker.workdir)
    try:
        c, got, _ = session(restarted)
        assert wait_for(lambda: len(got) == 5, 10), restarted.log()
        assert [json.loads(p)["n"] for p in got] == [0, 1, 2, 3, 4]
        c.disconnect()
        c.loop_stop()
    finally:
        restarted.proc.terminate()
        restarted.proc.wait(10)

"""Issue 16 item 1: no device can take (or wipe) a session that is not its own.

The attack: a device's real credentials plus the client id of ingest (guessable: the default is
``cityops-ingest``) or of another device, with clean start, used to take over or wipe that
session (8,000 of 8,000 queued readings lost). The broker config now has a device listener that
sets the client id to the user name and a services listener the devices have no login on.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cityops.broker_auth import device_password
from tests.integration.ingest.conftest import (
    INGEST_PASSWORD,
    SECRET,
    SecureBroker,
    wait_for,
)

pytestmark = pytest.mark.mqtt

INGEST_ID = "cityops-ingest"  # ingest's default client id (mqtt.client_id + "-ingest")
QUEUED = 200


class Session:
    """A paho MQTT 5 client that records connects, disconnects and messages."""

    def __init__(self, client_id: str, user: str, password: str) -> None:
        self.messages: list[bytes] = []
        self.connects: list[Any] = []
        self.disconnects: list[Any] = []
        self.session_present: bool | None = None
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(user, password)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(60, 120)  # no quick automatic reconnects: a kick stays visible
        c.on_connect = self._on_connect
        c.on_disconnect = lambda cl, u, f, reason, p: self.disconnects.append(reason)
        c.on_message = lambda cl, u, m: self.messages.append(m.payload)
        c.on_subscribe = lambda *a: self.subscribed.set()
        self.client = c

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: Any, p: Any) -> None:
        self.connects.append(reason)
        self.session_present = bool(getattr(flags, "session_present", False))

    def open(self, port: int, *, clean_start: bool, expiry: int = 3600) -> Any:
        """Connect and wait for the broker's answer; returns the CONNACK reason."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = expiry
        before = len(self.connects)
        try:
            self.client.connect("127.0.0.1", port, clean_start=clean_start, properties=props)
        except OSError:
            return None
        self.client.loop_start()
        wait_for(lambda: len(self.connects) > before or bool(self.disconnects), 10)
        return self.connects[-1] if len(self.connects) > before else None

    def close(self) -> None:
        """Disconnect (the session stays on the broker for its expiry)."""
        self.client.disconnect()
        self.client.loop_stop()
        # paho closes its wake-up socket pair only when the client is garbage collected
        reset = getattr(self.client, "_reset_sockets", None)
        if reset is not None:
            reset()


def _accepted(reason: Any) -> bool:
    return reason is not None and not reason.is_failure


def _device(name: str, client_id: str | None = None) -> Session:
    return Session(client_id or f"pub-{uuid.uuid4().hex[:6]}", name, device_password(SECRET, name))


def _ingest_session_with_queue(broker: SecureBroker) -> None:
    """Ingest subscribes with a persistent session, goes away, and readings queue for it."""
    ingest = Session(INGEST_ID, "cityops-ingest", INGEST_PASSWORD)
    reason = ingest.open(broker.port, clean_start=True)
    assert _accepted(reason), broker.log()
    ingest.client.subscribe("cityops/v1/+/+/telemetry", qos=1)
    assert ingest.subscribed.wait(10)
    ingest.close()
    pub = _device("HT-1")
    assert pub.open(broker.device_port, clean_start=True) is not None
    for i in range(QUEUED):
        pub.client.publish("cityops/v1/heating/HT-1/telemetry", json.dumps({"n": i}), qos=1)
    assert wait_for(lambda: not pub.client.want_write(), 10)
    pub.close()


def _resume_ingest(broker: SecureBroker) -> Session:
    ingest = Session(INGEST_ID, "cityops-ingest", INGEST_PASSWORD)
    reason = ingest.open(broker.port, clean_start=False)
    assert _accepted(reason), broker.log()
    return ingest


def test_a_device_cannot_take_or_wipe_ingests_session(secure_broker: SecureBroker) -> None:
    _ingest_session_with_queue(secure_broker)
    # 1. a device's real credentials with ingest's client id on the device listener: the broker
    #    accepts the login but as the device's own client id, so ingest's session is untouched
    attacker = _device("SL-1", INGEST_ID)
    reason = attacker.open(secure_broker.device_port, clean_start=True)
    assert _accepted(reason)
    attacker.close()
    # 2. the same on the services listener: the device has no login there at all
    attacker2 = _device("SL-1", INGEST_ID)
    reason2 = attacker2.open(secure_broker.port, clean_start=True)
    assert reason2 is None or reason2.is_failure
    attacker2.close()
    log = secure_broker.log()
    assert "as SL-1 " in log, log  # the broker named the device's connection after the device
    # ingest comes back: its session and every queued reading are still there
    ingest = _resume_ingest(secure_broker)
    try:
        assert ingest.session_present is True
        assert wait_for(lambda: len(ingest.messages) >= QUEUED, 20), secure_broker.log()
        got = [json.loads(m)["n"] for m in ingest.messages]
        assert sorted(got) == list(range(QUEUED))
    finally:
        ingest.close()


def test_a_device_cannot_kick_another_device(secure_broker: SecureBroker) -> None:
    victim = _device("HT-1", "HT-1")
    assert victim.open(secure_broker.device_port, clean_start=False) is not None
    try:
        attacker = _device("SL-1", "HT-1")  # another device's id, with clean start
        reason = attacker.open(secure_broker.device_port, clean_start=True)
        assert _accepted(reason)
        # the victim keeps its connection: a takeover would have disconnected it
        # (session taken over) before the attacker's CONNACK was sent
        assert victim.disconnects == []
        assert victim.client.is_connected()
        info = victim.client.publish("cityops/v1/heating/HT-1/telemetry", b"{}", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
        attacker.close()
    finally:
        victim.close()


def test_a_device_connecting_as_itself_still_works(secure_broker: SecureBroker) -> None:
    """The device listener does not break devices: any client id they send becomes their id."""
    dev = _device("CH-1", "whatever-the-firmware-sends")
    reason = dev.open(secure_broker.device_port, clean_start=True)
    try:
        assert _accepted(reason)
        info = dev.client.publish("cityops/v1/charger/CH-1/telemetry", b"{}", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        dev.close()
    assert "as CH-1 " in secure_broker.log()

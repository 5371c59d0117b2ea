"""The private test broker accepts a QoS 1 round trip (guards the fixture other tests rely on)."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import Broker

pytestmark = pytest.mark.mqtt


def test_qos1_round_trip(mqtt_broker: Broker) -> None:
    got = threading.Event()
    received: list[bytes] = []

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(msg.payload)
        got.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fixture-sub")
    sub.on_message = on_message
    sub.connect(mqtt_broker.host, mqtt_broker.port)
    sub.subscribe("test/fixture/#", qos=1)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fixture-pub")
    pub.connect(mqtt_broker.host, mqtt_broker.port)
    pub.loop_start()
    try:
        # The subscription may race the publish; retry the publish until it arrives.
        for _ in range(20):
            pub.publish("test/fixture/x", b"hello", qos=1).wait_for_publish(2)
            if got.wait(0.25):
                break
        assert received
        assert received[0] == b"hello"
    finally:
        pub.loop_stop()
        sub.loop_stop()
        pub.disconnect()
        sub.disconnect()

"""The MQTT side: a paho-mqtt 2 client with a persistent MQTT 5 session and manual acks.

Messages are handed to ``on_delivery`` from paho's network thread, tagged with the connection
generation they arrived on. A packet id is only meaningful on the connection that carried it:
after a reconnect the broker redelivers whatever was not acknowledged, so an ack for an older
generation is dropped instead of being sent (it could acknowledge a different message that
reuses the id). Receive Maximum bounds how many un-acknowledged messages the broker sends us,
which is the back-pressure: while the database is slow, the rest waits in the broker's queue.

mosquitto 2.0 does not always keep to Receive Maximum (a resumed session with a large backlog, a
database outage mid-stream: ten times the limit was seen), so the client enforces it too: with
Receive Maximum QoS 1 messages handed on and not yet acknowledged, paho's network thread waits
before handing on the next one. It then reads nothing more from the socket, so the rest stays
in the broker (TCP flow control), and memory is bounded whatever the backlog. Acknowledging
(sent or stale) frees room; stopping releases a waiting thread, leaving the message
un-acknowledged for the broker to redeliver.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from cityops import clock
from cityops.settings import Settings
from ingest.batcher import Delivery

log = structlog.get_logger(__name__)

INGEST_FILTERS = ("+/+/telemetry", "+/+/status", "hotline/+/complaints")
_PUBACK = 0x40  # MQTT control packet type PUBACK, flags 0
_PUBACK_PACKET = struct.Struct("!BBH")  # type, remaining length 2, packet id


def subscription_filters(
    root: str, group: str | None, *, partition: int = 0, partitions: int = 1
) -> list[str]:
    """The topic filters ingest subscribes to (shared when a group is set).

    Partitioned workers (``partitions`` > 1) each join their own group ``<group>-<partition>``:
    every partition receives every message and keeps its share (ingest.partition).
    """
    filters = [f"{root}/{f}" for f in INGEST_FILTERS]
    if group and partitions > 1:
        group = f"{group}-{partition}"
    if group:
        return [f"$share/{group}/{f}" for f in filters]
    return filters


def queue_pubacks(client: mqtt.Client, mids: Sequence[int]) -> bool:
    """Queue PUBACKs for ``mids`` (in order) and wake paho's network thread once.

    paho's ``ack`` queues one PUBACK on the client's outgoing packet queue and writes a byte to
    the socket pair that wakes the network thread -- per message: a system call and a GIL
    hand-over to the network thread each time, which then sends one PUBACK per wake-up. This
    queues the same packets (checked against ``ack`` by a unit test) and wakes the thread once.
    For a client whose network thread runs (``loop_start``/``loop_forever``), as ingest's does.
    Returns False, queuing nothing, if this paho version lacks the internals relied on; the
    caller then acknowledges through ``ack``.
    """
    out = getattr(client, "_out_packet", None)
    register_write = getattr(client, "_call_socket_register_write", None)
    if out is None or register_write is None:
        return False
    pack = _PUBACK_PACKET.pack
    out.extend(
        {
            "command": _PUBACK,
            "mid": mid,
            "qos": 1,
            "pos": 0,
            "to_process": 4,
            "packet": pack(_PUBACK, 2, mid),
            "info": None,
        }
        for mid in mids
    )
    wake = getattr(client, "_sockpairW", None)
    if wake is not None:
        with contextlib.suppress(BlockingIOError):
            wake.send(b"0")
    register_write()
    return True


class MqttSource:
    """Subscribes to the ingest topics and acknowledges messages when told to."""

    def __init__(
        self,
        settings: Settings,
        on_delivery: Callable[[Delivery], None],
        *,
        client_id: str,
    ) -> None:
        self._settings = settings
        self._on_delivery = on_delivery
        self._generation = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.last_error: str | None = None
        cfg = settings.ingest
        self._limit = cfg.receive_maximum
        self._held = 0  # QoS 1 messages handed on and not yet acknowledged (sent or stale)
        self._gate = threading.Condition()
        self._closing = False
        self.gate_waits = 0  # times the network thread waited for room (at the bound)
        self._filters = subscription_filters(
            cfg.topic_root,
            cfg.subscription_group,
            partition=cfg.partition,
            partitions=cfg.partitions,
        )
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        m = settings.mqtt
        if m.username:
            client.username_pw_set(
                m.username, m.password.get_secret_value() if m.password else None
            )
        if m.tls:
            client.tls_set()
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client

    @property
    def connected(self) -> bool:
        """A session with the broker is up and subscribed."""
        return self._connected.is_set() and self._subscribed.is_set()

    @property
    def held(self) -> int:
        """QoS 1 messages handed on and not yet acknowledged; at most Receive Maximum."""
        return self._held

    def _release(self, n: int) -> None:
        if n:
            with self._gate:
                self._held -= n
                self._gate.notify()

    @property
    def generation(self) -> int:
        """How many times a session was established (1 after the first connect)."""
        return self._generation

    def start(self) -> None:
        """Connect in the background (paho reconnects with backoff on its own)."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._settings.ingest.session_expiry_s
        props.ReceiveMaximum = self._settings.ingest.receive_maximum
        m = self._settings.mqtt
        self._client.connect_async(
            m.host, m.port, keepalive=m.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Block until the first subscription is confirmed."""
        return self._subscribed.wait(timeout_s)

    def ack(self, delivery: Delivery) -> bool:
        """Acknowledge one message if its connection is still the current one."""
        if delivery.qos == 0:
            return True
        self._release(1)
        if delivery.generation != self._generation or not self._connected.is_set():
            return False
        self._client.ack(delivery.mid, delivery.qos)
        return True

    def ack_all(self, deliveries: Sequence[Delivery]) -> int:
        """Acknowledge messages in the given order; return how many were stale (not sent).

        Same checks and order as :meth:`ack`, message by message, but the PUBACKs of the whole
        batch are queued at once and paho's network thread is woken once
        (:func:`queue_pubacks`) instead of once per message.
        """
        mids: list[int] = []
        stale = 0
        connected = self._connected
        if any(d.qos > 1 for d in deliveries):
            # QoS 2 is never subscribed to; if it ever comes, paho's own path
            return sum(0 if self.ack(d) else 1 for d in deliveries)
        for d in deliveries:
            if d.qos == 0:
                continue
            if d.generation != self._generation or not connected.is_set():
                stale += 1
                continue
            mids.append(d.mid)
        self._release(stale + len(mids))
        if mids and not queue_pubacks(self._client, mids):
            for mid in mids:
                self._client.ack(mid, 1)
        return stale

    def stop(self, drain_s: float = 2.0) -> None:
        """Let queued acks go out, then disconnect (the session stays on the broker)."""
        with self._gate:
            self._closing = True
            self._gate.notify_all()
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and self._client.want_write():
            time.sleep(0.01)
        self._client.disconnect()
        self._client.loop_stop()
        # paho closes the wake-up socket pair of loop_start() only in Client.__del__; when the
        # client ends up in a reference cycle the sockets can be finalised first and leak
        # (ResourceWarning). This source is never restarted, so close them now.
        reset = getattr(self._client, "_reset_sockets", None)
        if reset is not None:
            reset(sockpair_only=True)

    # --- paho callbacks (network thread) -------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self.last_error = f"connect refused: {reason}"
            log.warning("mqtt_connect_refused", reason=str(reason))
            return
        self._generation += 1
        self._connected.set()
        self.last_error = None
        log.info(
            "mqtt_connected",
            session_present=bool(getattr(flags, "session_present", False)),
            generation=self._generation,
        )
        opts = SubscribeOptions(qos=1)
        client.subscribe([(f, opts) for f in self._filters])

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self.last_error = f"subscription refused: {', '.join(failed)}"
            log.error("mqtt_subscribe_refused", reasons=failed)
            return
        self._subscribed.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected.clear()
        self._subscribed.clear()
        if reason.is_failure:
            self.last_error = f"disconnected: {reason}"
            log.warning("mqtt_disconnected", reason=str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.qos > 0:
            with self._gate:
                if self._held >= self._limit:
                    self.gate_waits += 1
                    while self._held >= self._limit and not self._closing:
                        self._gate.wait(1.0)
                if self._closing:
                    return  # not handed on, not acknowledged: the broker redelivers it
                self._held += 1
        self._on_delivery(
            Delivery(
                msg.topic,
                bytes(msg.payload),
                msg.mid,
                msg.qos,
                self._generation,
                # receive time from the process clock (simulated time in the demo)
                clock.receive_ms(),
            )
        )

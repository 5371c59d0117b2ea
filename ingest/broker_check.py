"""What ingest can learn of its broker at start, and whether its queue would drop a burst.

A stopped or slow ingest worker keeps a persistent session: the broker queues the worker's
messages, up to its per-client limit (mosquitto ``max_queued_messages``, 1000 by default), and
drops the rest without telling anyone. No broker publishes that limit, so the check gathers what
it can and compares:

- the CONNACK of a short MQTT 5 connection: mosquitto running without the project's
  configuration announces Receive Maximum 20 and no Maximum Packet Size (its defaults), so its
  queue limit is the default 1000;
- ``$SYS/broker/version`` and ``$SYS/broker/publish/messages/dropped`` where the account may read
  ``$SYS`` (the product's ACL gives that to ``cityops-monitor`` only, so there it is skipped);
- ``ingest.broker_max_queued_messages``, the limit as the operator declares it.

Every finding is logged once at start; none stops ingest.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cityops.settings import Settings

log = structlog.get_logger(__name__)

VERSION_TOPIC = "$SYS/broker/version"
DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
MOSQUITTO_DEFAULT_QUEUE = 1000  # mosquitto's max_queued_messages when the config does not set it
MOSQUITTO_DEFAULT_RECEIVE_MAXIMUM = 20  # its max_inflight_messages default, sent in CONNACK
_RETAINED_GRACE_S = 0.5


@dataclass(kw_only=True)
class BrokerFacts:
    """What one short connection learned about the broker."""

    connected: bool = False
    error: str | None = None
    receive_maximum: int | None = None
    maximum_packet_size: int | None = None
    version: str | None = None
    dropped: int | None = None
    sys: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    """One thing to tell the operator: a log level, an event name and the message."""

    level: str
    event: str
    message: str
    queue_limit: int | None = None


class _Probe:
    """The callbacks of the probe's connection, filling one BrokerFacts."""

    def __init__(self) -> None:
        self.facts = BrokerFacts()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.done = threading.Event()

    def on_connect(
        self, c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self.facts.error = f"connection refused: {reason}"
            self.done.set()
            self.subscribed.set()  # nothing more will come: stop waiting
            return
        self.facts.connected = True
        if props is not None:
            self.facts.receive_maximum = getattr(props, "ReceiveMaximum", None)
            self.facts.maximum_packet_size = getattr(props, "MaximumPacketSize", None)
        c.subscribe([(VERSION_TOPIC, 0), (DROPPED_TOPIC, 0)])
        self.connected.set()

    def on_subscribe(self, c: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self.subscribed.set()
        if all(getattr(code, "is_failure", False) for code in codes):
            self.done.set()  # $SYS is not readable for this account: nothing more to wait for

    def on_message(self, c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        facts = self.facts
        text = msg.payload.decode("utf-8", "replace").strip()
        facts.sys[msg.topic] = text
        if msg.topic == VERSION_TOPIC:
            facts.version = text
        elif msg.topic == DROPPED_TOPIC and text.isdigit():
            facts.dropped = int(text)
        if VERSION_TOPIC in facts.sys and DROPPED_TOPIC in facts.sys:
            self.done.set()


def probe(settings: Settings, *, timeout_s: float, client_id: str | None = None) -> BrokerFacts:
    """Connect once (clean session, its own client id), read CONNACK and what $SYS allows."""
    m = settings.mqtt
    state = _Probe()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"{m.client_id}-ingest-check-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )
    if m.username:
        client.username_pw_set(m.username, m.password.get_secret_value() if m.password else None)
    if m.tls:
        client.tls_set()
    client.on_connect = state.on_connect
    client.on_subscribe = state.on_subscribe
    client.on_message = state.on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    try:
        client.connect(m.host, m.port, keepalive=max(5, int(timeout_s) + 5), properties=props)
    except (OSError, ValueError) as err:
        state.facts.error = f"cannot connect to {m.host}:{m.port}: {err}"
        return state.facts
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout_s
        # $SYS values are retained: they arrive right after the SUBACK or not at all (a broker
        # whose ACL hides $SYS may still grant the subscription)
        if state.subscribed.wait(timeout_s) and not state.done.is_set():
            state.done.wait(min(_RETAINED_GRACE_S, max(0.0, deadline - time.monotonic())))
        if not state.connected.is_set() and state.facts.error is None:
            state.facts.error = f"no answer from {m.host}:{m.port} within {timeout_s:g} s"
    finally:
        client.disconnect()
        client.loop_stop()
        client._reset_sockets(sockpair_only=True)  # see MqttSource.stop: paho leaks them otherwise
    return state.facts


def assess(facts: BrokerFacts, settings: Settings) -> list[Finding]:
    """Compare what is known of the broker's queue with the burst ingest must survive."""
    cfg = settings.ingest
    burst = cfg.burst_messages
    if facts.error is not None:
        return [Finding(level="warning", event="broker_check_failed", message=facts.error)]
    findings: list[Finding] = []
    mosquitto = facts.version is None or facts.version.lower().startswith("mosquitto")
    limit: int | None = None
    source = ""
    if cfg.broker_max_queued_messages is not None:
        limit = cfg.broker_max_queued_messages
        source = "ingest.broker_max_queued_messages"
    elif (
        mosquitto
        and facts.receive_maximum == MOSQUITTO_DEFAULT_RECEIVE_MAXIMUM
        and facts.maximum_packet_size is None
    ):
        limit = MOSQUITTO_DEFAULT_QUEUE
        source = (
            f"{facts.version or 'the broker'} announces mosquitto's defaults (Receive Maximum "
            f"{MOSQUITTO_DEFAULT_RECEIVE_MAXIMUM}, no Maximum Packet Size): it runs without the "
            "project's configuration, so max_queued_messages is the default "
            f"{MOSQUITTO_DEFAULT_QUEUE}"
        )
    if limit is not None and burst and limit < burst:
        findings.append(
            Finding(
                level="warning",
                event="broker_queue_too_small",
                queue_limit=limit,
                message=(
                    f"the broker queues at most {limit:,} messages per client ({source}); "
                    f"ingest.burst_messages is {burst:,}, so a stopped or lagging worker loses "
                    f"everything beyond {limit:,}. Run the broker with deploy/mosquitto/"
                    "mosquitto.conf (max_queued_messages 2000000, max_queued_bytes 1 GB) or "
                    "raise its limits (docs/ingest.md, 'Broker settings')"
                ),
            )
        )
    elif limit is None and burst:
        findings.append(
            Finding(
                level="info",
                event="broker_queue_limit_unknown",
                message=(
                    "the broker does not tell its per-client queue limit; make sure it holds "
                    f"ingest.burst_messages ({burst:,}) for this worker (mosquitto: "
                    "max_queued_messages, max_queued_bytes) and declare it in "
                    "ingest.broker_max_queued_messages to have it checked"
                ),
            )
        )
    if facts.dropped:
        findings.append(
            Finding(
                level="warning",
                event="broker_dropped_messages",
                message=(
                    f"the broker reports {facts.dropped:,} dropped publishes since it started "
                    f"({DROPPED_TOPIC}): a queue or in-flight limit was hit"
                ),
            )
        )
    return findings


def check_broker(settings: Settings) -> list[Finding]:
    """Probe the broker, log each finding, return them (nothing when the check is off)."""
    cfg = settings.ingest
    if cfg.broker_check_s <= 0 or cfg.burst_messages == 0:
        return []
    facts = probe(settings, timeout_s=cfg.broker_check_s)
    findings = assess(facts, settings)
    log.info(
        "broker_checked",
        version=facts.version,
        receive_maximum=facts.receive_maximum,
        maximum_packet_size=facts.maximum_packet_size,
        sys_readable=bool(facts.sys),
    )
    for f in findings:
        getattr(log, f.level)(f.event, message=f.message)
    return findings

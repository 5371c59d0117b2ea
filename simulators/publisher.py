"""Publishing over MQTT (paho-mqtt 2): QoS 1, one connection or one per device, rate control.

``shared`` mode opens one connection that publishes for every device (an anonymous or service
account broker). ``per_device`` mode logs every device and gateway in as itself, with its password
derived from ``mqtt.device_secret`` (cityops.broker_auth) and a last will ``{"online": false}`` on
its status topic, as the broker ACLs in deploy/ require. All connections are driven by one
selector loop in the calling thread: no thread per connection, so thousands of devices are cheap.
"""

from __future__ import annotations

import contextlib
import selectors
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityops.broker_auth import device_password
from cityops.catalog import Kind
from cityops.errors import CityopsError
from simulators.messages import DEFAULT_PREFIX, Message, status_payload, status_topic

_SERVICE = "\x00service"  # key of the per-device mode's service connection (not a device id)


class PublishError(CityopsError):
    """The simulator could not connect to or publish through the broker."""


@dataclass(kw_only=True)
class PublisherConfig:
    """Where and how to publish."""

    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = DEFAULT_PREFIX
    mode: Literal["shared", "per_device"] = "shared"
    username: str | None = None
    password: str | None = None
    device_secret: str | None = None
    client_id: str = "cityops-sim"
    keepalive_s: int = 30
    max_rate: float | None = None
    max_pending: int = 5_000
    max_inflight: int = 200
    connect_timeout_s: float = 15.0
    # With max_pending messages unacknowledged, how long to wait for the broker before giving up.
    ack_timeout_s: float = 60.0


@dataclass(kw_only=True)
class PublishStats:
    """Counts since the publisher started."""

    published: int = 0
    acked: int = 0
    bytes: int = 0
    disconnects: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def pending(self) -> int:
        """Messages published but not yet acknowledged by the broker."""
        return self.published - self.acked


class Publisher:
    """Publishes simulator messages over one or many MQTT connections."""

    def __init__(self, config: PublisherConfig) -> None:
        if config.mode == "per_device" and not config.device_secret:
            raise PublishError("per-device connections need mqtt.device_secret")
        self.config = config
        self.stats = PublishStats()
        self._selector = selectors.DefaultSelector()
        self._clients: dict[str, mqtt.Client] = {}
        self._connected: set[str] = set()
        self._refused: dict[str, str] = {}
        self._dirty: set[mqtt.Client] = set()
        self._last_misc = 0.0
        self._next_slot = time.monotonic()

    # --- connections ---------------------------------------------------------------------------

    def _new_client(
        self, name: str, username: str | None, password: str | None, will: Message | None
    ) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=name,
            clean_session=True,
            protocol=mqtt.MQTTv311,
            userdata=name,
        )
        client.max_inflight_messages_set(self.config.max_inflight)
        client.max_queued_messages_set(0)
        if username is not None:
            client.username_pw_set(username, password)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=1, retain=False)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        return client

    def _on_connect(
        self, client: mqtt.Client, name: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._refused[str(name)] = str(reason)
        else:
            self._connected.add(str(name))

    def _on_publish(
        self, client: mqtt.Client, name: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        self.stats.acked += 1

    def _on_disconnect(
        self, client: mqtt.Client, name: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected.discard(str(name))
        self.stats.disconnects += 1

    def _on_socket_open(self, client: mqtt.Client, name: Any, sock: Any) -> None:
        self._selector.register(sock, selectors.EVENT_READ, client)

    def _on_socket_close(self, client: mqtt.Client, name: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def connect(
        self, devices: Iterable[tuple[Kind, str]] = (), gateways: Iterable[str] = ()
    ) -> None:
        """Open the connections: one shared, or one per device and gateway listed."""
        c = self.config
        if c.mode == "shared":
            self._open(c.client_id, c.client_id, c.username, c.password, None)
        else:
            secret = c.device_secret or ""
            for kind, device_id in devices:
                will = Message(
                    topic=status_topic(kind, device_id, c.prefix),
                    payload=status_payload(False, None),
                    sender=device_id,
                )
                self._open(
                    device_id, device_id, device_id, device_password(secret, device_id), will
                )
            for gateway_id in gateways:
                self._open(
                    gateway_id, gateway_id, gateway_id, device_password(secret, gateway_id), None
                )
            if c.username:
                # The hotline bridge is a service, not a device: it posts complaints under the
                # configured service account, which the ACLs allow to write hotline topics.
                self._open(_SERVICE, f"{c.client_id}-hotline", c.username, c.password, None)
        deadline = time.monotonic() + c.connect_timeout_s
        while len(self._connected) + len(self._refused) < len(self._clients):
            if time.monotonic() > deadline:
                raise PublishError(
                    f"{len(self._clients) - len(self._connected)} of {len(self._clients)} "
                    f"connections to {c.host}:{c.port} not acknowledged in {c.connect_timeout_s} s"
                )
            self.service(0.05)
        if self._refused:
            name, why = next(iter(self._refused.items()))
            raise PublishError(
                f"the broker at {c.host}:{c.port} refused {len(self._refused)} connection(s), "
                f"e.g. {name!r}: {why}; check the credentials (mqtt.device_secret) and ACLs"
            )

    def _open(
        self,
        key: str,
        client_id: str,
        username: str | None,
        password: str | None,
        will: Message | None,
    ) -> None:
        client = self._new_client(client_id, username, password, will)
        try:
            client.connect(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        except OSError as err:
            raise PublishError(
                f"cannot connect to the broker at {self.config.host}:{self.config.port}: {err}"
            ) from err
        self._clients[key] = client
        self._dirty.add(client)

    # --- publishing ----------------------------------------------------------------------------

    def _client_for(self, sender: str | None) -> mqtt.Client | None:
        if self.config.mode == "shared":
            return self._clients[self.config.client_id]
        return self._clients.get(_SERVICE if sender is None else sender)

    def publish(self, message: Message) -> None:
        """Publish one message at QoS 1, honouring the rate limit and the pending bound."""
        c = self.config
        if c.max_rate:
            now = time.monotonic()
            if self._next_slot > now:
                self.service_until(self._next_slot)
            self._next_slot = max(self._next_slot, now) + 1.0 / c.max_rate
        if self.stats.pending >= c.max_pending:
            # Bounded: a broker that stops acknowledging must end the run, not hang it.
            deadline = time.monotonic() + c.ack_timeout_s
            while self.stats.pending >= c.max_pending:
                if time.monotonic() > deadline:
                    raise PublishError(
                        f"the broker acknowledged nothing for {c.ack_timeout_s:g} s with "
                        f"{self.stats.pending} messages pending"
                    )
                self.service(0.05)
        client = self._client_for(message.sender)
        if client is None:
            # Per-device mode: a lamp behind a cabinet has no login of its own, so its status
            # cannot be published (the broker ACL would refuse it); its gateway reports it.
            # Complaints without a service account are skipped the same way.
            self.stats.skipped += 1
            return
        info = client.publish(message.topic, message.payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise PublishError("the client's queue is full")
        self.stats.published += 1
        self.stats.bytes += len(message.payload)
        if client.want_write():
            self._dirty.add(client)

    def publish_all(self, messages: Iterable[Message]) -> int:
        """Publish every message; return how many."""
        n = 0
        for m in messages:
            self.publish(m)
            n += 1
        return n

    # --- the loop ------------------------------------------------------------------------------

    def service(self, timeout: float = 0.0) -> None:
        """Run network I/O once: read acks, write what is queued, keep connections alive."""
        for key, _ in self._selector.select(timeout):
            client: mqtt.Client = key.data
            client.loop_read()
            if client.want_write():
                self._dirty.add(client)
        dirty, self._dirty = self._dirty, set()
        for client in dirty:
            client.loop_write()
            if client.want_write():
                self._dirty.add(client)
        now = time.monotonic()
        if now - self._last_misc >= 1.0:
            self._last_misc = now
            for client in self._clients.values():
                if client.loop_misc() == mqtt.MQTT_ERR_NO_CONN:
                    self._reconnect(client)

    def _reconnect(self, client: mqtt.Client) -> None:
        try:
            client.reconnect()
            self._dirty.add(client)
        except OSError:
            pass  # the broker is still down; try again on the next pass

    def service_until(self, deadline: float) -> None:
        """Keep the connections serviced until the monotonic clock reaches ``deadline``."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.service(min(left, 0.05))

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every published message is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.stats.pending > 0:
            if time.monotonic() > deadline:
                return False
            self.service(0.05)
        return True

    def close(self, offline: Iterable[tuple[Kind, str]] = (), ts_ms: int | None = None) -> None:
        """Announce ``offline`` devices (what their wills would say), flush and disconnect."""
        for kind, device_id in offline:
            self.publish(
                Message(
                    topic=status_topic(kind, device_id, self.config.prefix),
                    payload=status_payload(False, ts_ms),
                    sender=device_id if self.config.mode == "per_device" else None,
                )
            )
        self.flush(10.0)
        for client in self._clients.values():
            client.disconnect()
            client.loop_write()
            # paho closes the socket only when a loop reads EOF; close it now so no file
            # descriptor outlives the publisher (no public API does this without a loop).
            client._reset_sockets()
        self._selector.close()
        self._clients.clear()

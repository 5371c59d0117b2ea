"""Senders: deliver one notification to one receiver, or raise DeliveryError.

Library errors (urllib, smtplib, paho) are translated here, once; ``permanent`` marks the errors
that a retry cannot fix (an HTTP 4xx other than 408/429, an SMTP 5xx).
"""

from __future__ import annotations

import os
import smtplib
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from alerts.notify import payloads
from alerts.notify.model import DeliveryError, Notification
from alerts.notify.routes import (
    AlertmanagerReceiver,
    AnyReceiver,
    EmailReceiver,
    MqttReceiver,
    RoutesConfig,
    WebhookReceiver,
)
from cityops.settings import MqttSettings


class Sender(Protocol):
    """Delivers notifications to one receiver; called from that receiver's worker thread only."""

    def send(self, n: Notification) -> None:
        """Deliver ``n`` or raise DeliveryError."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _post_json(url: str, body: Any, headers: Mapping[str, str], timeout_s: float) -> None:
    data = orjson.dumps(body)
    request = urllib.request.Request(  # noqa: S310 - the routes file only admits http(s) URLs
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "cityops", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as err:
        permanent = 400 <= err.code < 500 and err.code not in (408, 429)
        raise DeliveryError(f"HTTP {err.code} from {url}", permanent=permanent) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DeliveryError(f"cannot POST to {url}: {reason}") from err


class WebhookSender:
    """POSTs the cityops JSON notification."""

    def __init__(self, cfg: WebhookReceiver) -> None:
        self.cfg = cfg

    def send(self, n: Notification) -> None:
        """POST the notification; a 2xx answer is delivery."""
        body = payloads.cityops_payload(n, self.cfg.name)
        _post_json(self.cfg.url, body, self.cfg.headers, self.cfg.timeout.total_seconds())

    def close(self) -> None:
        """Nothing to release (a connection per request)."""


class AlertmanagerSender:
    """POSTs the Alertmanager webhook v4 payload."""

    def __init__(self, cfg: AlertmanagerReceiver) -> None:
        self.cfg = cfg

    def send(self, n: Notification) -> None:
        """POST the notification in Alertmanager's format."""
        body = payloads.alertmanager_payload(
            n, self.cfg.name, external_url=self.cfg.external_url, max_alerts=self.cfg.max_alerts
        )
        _post_json(self.cfg.url, body, self.cfg.headers, self.cfg.timeout.total_seconds())

    def close(self) -> None:
        """Nothing to release (a connection per request)."""


class EmailSender:
    """Sends a plain-text mail per notification over SMTP."""

    def __init__(self, cfg: EmailReceiver) -> None:
        self.cfg = cfg

    def _password(self) -> str | None:
        if self.cfg.password_env is None:
            return None
        value = os.environ.get(self.cfg.password_env)
        if value is None:
            raise DeliveryError(
                f"receiver {self.cfg.name!r}: environment variable {self.cfg.password_env} "
                "(the SMTP password) is not set"
            )
        return value

    def send(self, n: Notification) -> None:
        """Connect, optionally STARTTLS and log in, send, quit."""
        cfg = self.cfg
        msg = payloads.email_message(n, sender=cfg.from_, to=cfg.to)
        timeout = cfg.timeout.total_seconds()
        smtp_cls = smtplib.SMTP_SSL if cfg.ssl else smtplib.SMTP
        try:
            with smtp_cls(cfg.smtp_host, cfg.smtp_port, timeout=timeout) as smtp:
                if cfg.starttls:
                    smtp.starttls()
                if cfg.username:
                    smtp.login(cfg.username, self._password() or "")
                refused = smtp.send_message(msg, from_addr=cfg.from_, to_addrs=list(cfg.to))
        except smtplib.SMTPResponseException as err:
            raise DeliveryError(
                f"SMTP {err.smtp_code} from {cfg.smtp_host}:{cfg.smtp_port}: {err.smtp_error!r}",
                permanent=500 <= err.smtp_code < 600,
            ) from err
        except smtplib.SMTPRecipientsRefused as err:
            raise DeliveryError(
                f"{cfg.smtp_host} refused every recipient: {sorted(err.recipients)}",
                permanent=True,
            ) from err
        except (smtplib.SMTPException, OSError) as err:
            raise DeliveryError(
                f"cannot send mail via {cfg.smtp_host}:{cfg.smtp_port}: {err}"
            ) from err
        if refused:
            # Some recipients took it; a retry would duplicate the mail for them.
            raise DeliveryError(
                f"{cfg.smtp_host} refused recipients {sorted(refused)}", permanent=True
            )

    def close(self) -> None:
        """Nothing to release (a connection per mail)."""


class MqttSender:
    """Publishes to ``{topic_root}/alerts/{kind}/{area}``, keeping one broker connection."""

    def __init__(self, cfg: MqttReceiver, mqtt: MqttSettings) -> None:
        self.cfg = cfg
        self.mqtt = mqtt
        self._client: Any = None
        self._connected = threading.Event()

    def _connect(self) -> Any:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        if self._client is not None:
            return self._client
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            # Unique per process: several cityops processes may publish alerts at once.
            client_id=f"{self.mqtt.client_id}-notify-{self.cfg.name}-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        if self.mqtt.username:
            password = self.mqtt.password.get_secret_value() if self.mqtt.password else None
            client.username_pw_set(self.mqtt.username, password)
        if self.mqtt.tls:
            client.tls_set()
        self._connected.clear()

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not reason.is_failure:
                self._connected.set()

        def on_disconnect(_c: Any, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
            self._connected.clear()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        timeout = self.cfg.timeout.total_seconds()
        try:
            client.connect(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
        except OSError as err:
            raise DeliveryError(
                f"cannot connect to the broker {self.mqtt.host}:{self.mqtt.port}: {err}"
            ) from err
        client.loop_start()
        if not self._connected.wait(timeout):
            client.loop_stop()
            client.disconnect()
            raise DeliveryError(
                f"the broker {self.mqtt.host}:{self.mqtt.port} did not accept the connection"
            )
        self._client = client
        return client

    def send(self, n: Notification) -> None:
        """Publish one message per kind and area; wait for the broker's acknowledgement."""
        client = self._connect()
        timeout = self.cfg.timeout.total_seconds()
        try:
            infos = [
                client.publish(topic, orjson.dumps(body), qos=self.cfg.qos, retain=self.cfg.retain)
                for topic, body in payloads.mqtt_messages(n, self.cfg.name, self.cfg.topic_root)
            ]
            for info in infos:
                info.wait_for_publish(timeout)
                if not info.is_published():
                    raise DeliveryError(
                        f"the broker {self.mqtt.host}:{self.mqtt.port} did not acknowledge "
                        f"the publish in {timeout:g}s"
                    )
        except (RuntimeError, ValueError, OSError) as err:
            self.close()
            raise DeliveryError(f"MQTT publish failed: {err}") from err
        except DeliveryError:
            self.close()
            raise

    def close(self) -> None:
        """Disconnect from the broker."""
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()


def build_sender(cfg: AnyReceiver, mqtt: MqttSettings) -> Sender:
    """The sender for one receiver of the routes file."""
    if isinstance(cfg, WebhookReceiver):
        return WebhookSender(cfg)
    if isinstance(cfg, AlertmanagerReceiver):
        return AlertmanagerSender(cfg)
    if isinstance(cfg, EmailReceiver):
        return EmailSender(cfg)
    return MqttSender(cfg, mqtt)


def build_senders(config: RoutesConfig, mqtt: MqttSettings) -> dict[str, Sender]:
    """A sender for every receiver of ``config``, by receiver name."""
    return {r.name: build_sender(r, mqtt) for r in config.receivers}

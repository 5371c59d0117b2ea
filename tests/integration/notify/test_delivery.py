"""Delivery to real receivers: a local HTTP webhook server, aiosmtpd, mosquitto, PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from alerts.model import NoticeState
from alerts.notify import ManualClock, Notifier, build_senders
from alerts.notify.routes import RoutesConfig
from cityops.settings import MqttSettings
from tests.integration.notify.conftest import SmtpSink, WebhookServer
from tests.unit.notify.helpers import T0, notice, routes

Start = Callable[..., WebhookServer]


def _config(receivers: str, route_extra: str = "", names: str = "[desk]") -> RoutesConfig:
    return routes(
        f"""
version: 1
defaults:
  group_by: [alertname, area_code]
  group_wait: 10s
  group_interval: 1m
  repeat_interval: 1h
receivers:
{receivers}
routes:
  - name: all
    receivers: {names}
{route_extra}
"""
    )


def _webhook(name: str, url: str, kind: str = "webhook", extra: str = "") -> str:
    return (
        f"  - {{name: {name}, type: {kind}, url: '{url}', timeout: 5s, "
        f"backoff_initial: 10s{extra}}}"
    )


class Run:
    """A started notifier on a manual clock."""

    def __init__(
        self,
        config: RoutesConfig,
        *,
        mqtt: MqttSettings | None = None,
        pool: ConnectionPool | None = None,
        acked: set[int] | None = None,
    ) -> None:
        self.clock = ManualClock(T0)
        self.acked = acked if acked is not None else set()
        self.notifier = Notifier(
            config,
            build_senders(config, mqtt or MqttSettings()),
            clock=self.clock,
            is_acknowledged=lambda alert_id: alert_id in self.acked,
            pool=pool,
        ).start()

    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)
        self.notifier.tick()
        assert self.notifier.wait_idle(20)


@pytest.fixture
def run_factory() -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def make(config: RoutesConfig, **kw: Any) -> Run:
        r = Run(config, **kw)
        runs.append(r)
        return r

    yield make
    for r in runs:
        r.notifier.stop()


def test_webhook_delivery(webhook_server: Start, run_factory: Callable[..., Run]) -> None:
    server = webhook_server()
    run = run_factory(_config(_webhook("desk", server.url)))
    run.notifier.submit([notice(1), notice(2)])
    run.advance(timedelta(seconds=10))
    [body] = server.delivered
    assert body["purpose"] == "firing"
    assert body["receiver"] == "desk"
    assert body["group_labels"] == {"alertname": "lamp_off_while_due", "area_code": "110105001"}
    assert [a["alert_id"] for a in body["alerts"]] == [1, 2]
    assert body["alerts"][0]["labels"]["device_id"] == "L00001"
    run.notifier.submit([notice(1, state=NoticeState.RESOLVED, at=run.clock.now())])
    run.advance(timedelta(minutes=1))
    assert [b["purpose"] for b in server.delivered] == ["firing", "resolved"]
    assert {a["alert_id"]: a["state"] for a in server.delivered[1]["alerts"]} == {
        1: "resolved",
        2: "firing",
    }


def test_alertmanager_receiver(webhook_server: Start, run_factory: Callable[..., Run]) -> None:
    server = webhook_server()
    receiver = _webhook("am", server.url, "alertmanager", ", external_url: 'http://ops.example'")
    run = run_factory(_config(receiver, names="[am]"))
    run.notifier.submit([notice(7)])
    run.advance(timedelta(seconds=10))
    [body] = server.delivered
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "am"
    assert body["truncatedAlerts"] == 0
    assert body["externalURL"] == "http://ops.example"
    assert body["groupLabels"] == {"alertname": "lamp_off_while_due", "area_code": "110105001"}
    [alert] = body["alerts"]
    assert alert["labels"]["device_id"] == "L00007"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"] == "http://ops.example/api/v1/alerts/7"


def test_email_delivery(smtp_server: SmtpSink, run_factory: Callable[..., Run]) -> None:
    receiver = (
        f"  - {{name: mail, type: email, smtp_host: {smtp_server.host}, "
        f"smtp_port: {smtp_server.port}, from: cityops@ops.example, "
        "to: [duty@ops.example, lead@ops.example]}"
    )
    run = run_factory(_config(receiver, names="[mail]"))
    run.notifier.submit([notice(i, area="110105002", street="三里屯") for i in range(3)])
    run.advance(timedelta(seconds=10))
    assert smtp_server.wait_for(1)
    [(mail_from, rcpt, raw)] = smtp_server.messages
    assert mail_from == "cityops@ops.example"
    assert rcpt == ["duty@ops.example", "lead@ops.example"]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == ("[cityops FIRING:3] alertname=lamp_off_while_due area_code=110105002")
    body = msg.get_body().get_content()  # type: ignore[union-attr]
    assert body.count("[FIRING] warning lamp_off_while_due") == 3
    assert body.count("street=三里屯") == 3


def test_email_to_a_dead_smtp_server_is_retried(
    smtp_server: SmtpSink, run_factory: Callable[..., Run]
) -> None:
    from tests.conftest import free_port

    dead = free_port()
    receiver = (
        f"  - {{name: mail, type: email, smtp_host: 127.0.0.1, smtp_port: {dead}, "
        "from: cityops@ops.example, to: [duty@ops.example], backoff_initial: 10s}"
    )
    run = run_factory(_config(receiver, names="[mail]"))
    run.notifier.submit([notice(1)])
    run.advance(timedelta(seconds=10))
    assert run.notifier.counts()["mail"] == {"failed": 1}
    assert run.notifier.workers["mail"].parked == 1


@pytest.mark.mqtt
def test_mqtt_delivery(mqtt_broker: Any, run_factory: Callable[..., Run]) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    root = f"test-{uuid.uuid4().hex[:8]}/v1"
    got: list[tuple[str, dict[str, Any], int]] = []
    arrived = threading.Event()
    subscribed = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")

    def on_connect(c: Any, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        c.subscribe(f"{root}/alerts/#", qos=1)

    def on_subscribe(*_a: Any) -> None:
        subscribed.set()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        got.append((msg.topic, json.loads(msg.payload), msg.qos))
        if len(got) >= 2:
            arrived.set()

    sub.on_connect = on_connect
    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    sub.connect(mqtt_broker.host, mqtt_broker.port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        receiver = f"  - {{name: feed, type: mqtt, topic_root: '{root}'}}"
        config = _config(receiver, names="[feed]")
        mqtt = MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port, client_id="notify-test")
        run = run_factory(config, mqtt=mqtt)
        notices = [notice(i) for i in range(5)] + [notice(9, kind="manhole", rule="cover_open")]
        run.notifier.submit(notices)
        run.advance(timedelta(seconds=10))
        assert run.notifier.counts()["feed"] == {"sent": 2}
        assert arrived.wait(10)
    finally:
        sub.disconnect()
        sub.loop_stop()
    by_topic = {topic: (body, qos) for topic, body, qos in got}
    lamps, qos = by_topic[f"{root}/alerts/streetlight/110105001"]
    assert qos == 1
    assert [a["alert_id"] for a in lamps["alerts"]] == [0, 1, 2, 3, 4]
    covers, _ = by_topic[f"{root}/alerts/manhole/110105001"]
    assert [a["rule"] for a in covers["alerts"]] == ["cover_open"]


def test_a_group_outage_is_one_webhook_call(
    webhook_server: Start, run_factory: Callable[..., Run]
) -> None:
    server = webhook_server()
    run = run_factory(_config(_webhook("desk", server.url)))
    # A cabinet outage: 300 lamps of one area fire within the group wait.
    for start in range(0, 300, 50):
        run.notifier.submit([notice(i) for i in range(start, start + 50)])
        run.advance(timedelta(seconds=1))
    run.advance(timedelta(seconds=10))
    run.advance(timedelta(minutes=5))
    assert len(server.requests) == 1
    assert len(server.delivered[0]["alerts"]) == 300


def test_a_hung_receiver_does_not_block_the_others(
    webhook_server: Start, run_factory: Callable[..., Run]
) -> None:
    hung = webhook_server()
    hung.hold.clear()  # answers nothing until released
    healthy = webhook_server()
    from tests.conftest import free_port

    refused = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    receivers = "\n".join(
        [
            _webhook("hung", hung.url),
            _webhook("healthy", healthy.url),
            _webhook("refused", refused),
        ]
    )
    run = run_factory(_config(receivers, names="[hung, refused, healthy]"))
    run.notifier.submit([notice(1)])
    run.clock.advance(timedelta(seconds=10))
    run.notifier.tick()
    assert healthy.wait_for(1)
    assert hung.arrived.wait(10)
    assert hung.requests == []  # still hanging while the healthy receiver already has it
    hung.hold.set()
    assert run.notifier.wait_idle(20)
    assert len(hung.delivered) == 1
    counts = run.notifier.counts()
    assert counts["healthy"] == {"sent": 1}
    assert counts["hung"] == {"sent": 1}
    assert counts["refused"] == {"failed": 1}


def test_reminders_and_escalation_reach_real_receivers(
    webhook_server: Start, run_factory: Callable[..., Run]
) -> None:
    desk, supervisor = webhook_server(), webhook_server()
    receivers = _webhook("desk", desk.url) + "\n" + _webhook("supervisor", supervisor.url)
    escalation = "    escalation:\n      - {escalate_after: 45m, receivers: [supervisor]}"
    run = run_factory(_config(receivers, escalation))
    run.notifier.submit([notice(1), notice(2)])
    run.advance(timedelta(seconds=10))
    run.acked.add(2)
    run.advance(timedelta(minutes=45))
    assert [(b["purpose"], [a["alert_id"] for a in b["alerts"]]) for b in supervisor.delivered] == [
        ("escalation", [1])
    ]
    run.advance(timedelta(minutes=15))  # an hour after the first notification
    assert [b["purpose"] for b in desk.delivered] == ["firing", "reminder"]
    assert [a["alert_id"] for a in desk.delivered[1]["alerts"]] == [1]
    assert supervisor.delivered[-1]["purpose"] == "reminder"
    run.acked.add(1)
    run.advance(timedelta(hours=3))
    assert len(desk.delivered) == 2  # acknowledged: no more reminders
    assert len(supervisor.delivered) == 2


@pytest.mark.pg
def test_retry_after_failures_is_recorded(
    webhook_server: Start, run_factory: Callable[..., Run], migrated_db: str
) -> None:
    server = webhook_server(fail_first=2, fail_status=503)
    gone = webhook_server(fail_first=1, fail_status=404)
    receivers = _webhook("desk", server.url) + "\n" + _webhook("gone", gone.url)
    pool = ConnectionPool(
        migrated_db, min_size=1, max_size=2, kwargs={"options": "-c TimeZone=UTC"}, open=False
    )
    pool.open(wait=True, timeout=10)
    try:
        run = run_factory(_config(receivers, names="[desk, gone]"), pool=pool)
        run.notifier.submit([notice(1), notice(2)])
        run.advance(timedelta(seconds=10))  # attempt 1 fails; the 404 gives up at once
        with psycopg.connect(migrated_db) as conn:
            waiting = conn.execute(
                "SELECT status, attempts, next_attempt_at, last_error FROM notifications "
                "WHERE receiver = 'desk'"
            ).fetchone()
        assert waiting is not None
        assert waiting[:3] == ("failed", 1, T0 + timedelta(seconds=20))
        assert "HTTP 503" in waiting[3]
        run.advance(timedelta(seconds=10))  # attempt 2 after backoff_initial
        run.advance(timedelta(seconds=19))
        assert len(server.requests) == 2  # the second wait is 20 s
        run.advance(timedelta(seconds=1))
        assert len(server.requests) == 3
        assert len(server.delivered) == 1
        run.advance(timedelta(minutes=10))
        assert len(server.requests) == 3  # delivered once
        assert len(gone.requests) == 1
        run.notifier.stop()
        with psycopg.connect(migrated_db) as conn:
            rows = conn.execute(
                "SELECT receiver, receiver_type, purpose, status, attempts, alert_ids, "
                "fingerprints, alert_count, last_error, sent_at IS NOT NULL, "
                "payload->>'purpose', jsonb_array_length(payload->'alerts'), group_key "
                "FROM notifications ORDER BY receiver"
            ).fetchall()
    finally:
        pool.close()
    desk_row, gone_row = rows[0], rows[1]
    assert desk_row[0] == "desk"
    assert desk_row[1:5] == ("webhook", "firing", "sent", 3)
    assert desk_row[5] == [1, 2]
    assert len(desk_row[6]) == 2
    assert desk_row[7] == 2
    assert desk_row[8] is None
    assert desk_row[9] is True
    assert desk_row[10:12] == ("firing", 2)
    assert desk_row[12] == 'all:{alertname="lamp_off_while_due", area_code="110105001"}'
    assert gone_row[0] == "gone"
    assert gone_row[3:5] == ("given_up", 1)
    assert "HTTP 404" in gone_row[8]
    assert gone_row[9] is False


def test_the_ticker_retries_on_the_system_clock(webhook_server: Start) -> None:
    server = webhook_server(fail_first=1)
    config = _config(
        _webhook("desk", server.url).replace("backoff_initial: 10s", "backoff_initial: 50ms"),
        "    group_wait: 0s",
    )
    notifier = Notifier(config, build_senders(config, MqttSettings())).start(tick_interval_s=0.02)
    try:
        notifier.submit([notice(1)])  # group_wait 0s: sent from submit, refused once
        assert server.wait_for(1, timeout_s=20)
    finally:
        notifier.stop()
    assert len(server.requests) == 2
    assert notifier.counts()["desk"] == {"failed": 1, "sent": 1}


def test_an_unreachable_broker_is_retried(run_factory: Callable[..., Run]) -> None:
    from tests.conftest import free_port

    receiver = "  - {name: feed, type: mqtt, timeout: 2s}"
    mqtt = MqttSettings(host="127.0.0.1", port=free_port())
    run = run_factory(_config(receiver, names="[feed]"), mqtt=mqtt)
    run.notifier.submit([notice(1)])
    run.advance(timedelta(seconds=10))
    assert run.notifier.counts()["feed"] == {"failed": 1}
    run.advance(timedelta(seconds=1))
    assert run.notifier.counts()["feed"] == {"failed": 2}


@pytest.mark.pg
def test_a_database_outage_does_not_stop_delivery(
    webhook_server: Start, run_factory: Callable[..., Run], pg_admin_dsn: str
) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(pg_admin_dsn)
    parts["dbname"] = f"cityops_absent_{uuid.uuid4().hex[:8]}"
    absent = make_conninfo(**{k: v for k, v in parts.items() if v is not None})
    pool = ConnectionPool(absent, min_size=1, max_size=1, open=False, reconnect_timeout=1)
    pool.open(wait=False)
    server = webhook_server()
    try:
        run = run_factory(_config(_webhook("desk", server.url)), pool=pool)
        run.notifier.submit([notice(1)])
        run.advance(timedelta(seconds=10))
        assert len(server.delivered) == 1
        store = run.notifier.workers["desk"].store
        assert store is not None
        assert store.skipped == 2  # the pending and the sent record, nothing waited twice
        run.notifier.stop()
    finally:
        pool.close()

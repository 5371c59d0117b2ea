"""Wire formats: the Alertmanager webhook v4 body, the cityops JSON, mail and MQTT topics."""

from __future__ import annotations

from datetime import timedelta

from alerts.model import NoticeState
from alerts.notify.model import Notification, Purpose
from alerts.notify.payloads import (
    alertmanager_payload,
    cityops_payload,
    email_message,
    mqtt_messages,
)
from alerts.rules import Severity
from tests.unit.notify.helpers import T0, notice

AM_TOP_KEYS = {
    "version",
    "groupKey",
    "truncatedAlerts",
    "status",
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "alerts",
}
AM_ALERT_KEYS = {
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
}


def _notification(purpose: Purpose = Purpose.FIRING, **kw: object) -> Notification:
    resolved = notice(2, state=NoticeState.RESOLVED, at=T0 + timedelta(minutes=5))
    return Notification(
        route="lighting",
        group_key='lighting:{area_code="110105001"}',
        group_labels={"area_code": "110105001"},
        purpose=purpose,
        alerts=(notice(1, severity=Severity.CRITICAL), resolved),
        created_at=T0 + timedelta(minutes=6),
        **kw,  # type: ignore[arg-type]
    )


def test_alertmanager_v4_shape() -> None:
    body = alertmanager_payload(
        _notification(), "oncall", external_url="http://cityops.example:8000"
    )
    assert set(body) == AM_TOP_KEYS
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "oncall"
    assert body["groupKey"] == 'lighting:{area_code="110105001"}'
    assert body["truncatedAlerts"] == 0
    assert body["groupLabels"] == {"area_code": "110105001"}
    assert body["externalURL"] == "http://cityops.example:8000"
    # Labels shared by both alerts; severity differs so it is not common.
    assert body["commonLabels"] == {
        "alertname": "lamp_off_while_due",
        "kind": "streetlight",
        "area_code": "110105001",
    }
    assert body["commonAnnotations"] == {"runbook": "lighting"}
    firing, resolved = body["alerts"]
    assert set(firing) == AM_ALERT_KEYS
    assert set(resolved) == AM_ALERT_KEYS
    assert firing["status"] == "firing"
    assert firing["labels"]["severity"] == "critical"
    assert firing["labels"]["device_id"] == "L00001"
    assert firing["annotations"]["summary"].startswith("Lamp L00001")
    assert firing["startsAt"] == "2026-01-10T20:00:00Z"
    assert firing["endsAt"] == "0001-01-01T00:00:00Z"
    assert firing["generatorURL"] == "http://cityops.example:8000/api/v1/alerts/1"
    assert len(firing["fingerprint"]) > 0
    assert resolved["status"] == "resolved"
    assert resolved["endsAt"] == "2026-01-10T20:05:00Z"


def test_alertmanager_truncation_and_resolved_status() -> None:
    n = _notification()
    body = alertmanager_payload(n, "oncall", max_alerts=1)
    assert body["truncatedAlerts"] == 1
    assert len(body["alerts"]) == 1
    only_resolved = Notification(
        route=n.route,
        group_key=n.group_key,
        group_labels=n.group_labels,
        purpose=Purpose.RESOLVED,
        alerts=(n.alerts[1],),
        created_at=n.created_at,
    )
    assert alertmanager_payload(only_resolved, "oncall")["status"] == "resolved"


def test_cityops_payload_carries_purpose_level_and_alerts() -> None:
    body = cityops_payload(_notification(Purpose.ESCALATION, level=2), "desk")
    assert body["purpose"] == "escalation"
    assert body["level"] == 2
    assert body["receiver"] == "desk"
    assert body["status"] == "firing"
    assert [a["alert_id"] for a in body["alerts"]] == [1, 2]
    assert body["alerts"][1]["resolved_at"] == "2026-01-10T20:05:00Z"
    assert body["alerts"][0]["severity"] == "critical"


def test_email_subject_and_body() -> None:
    msg = email_message(
        _notification(Purpose.ESCALATION, level=1),
        sender="cityops@ops.example",
        to=("a@ops.example", "b@ops.example"),
    )
    assert msg["Subject"] == "[cityops ESCALATION L1:1] area_code=110105001"
    assert msg["To"] == "a@ops.example, b@ops.example"
    text = msg.get_content()
    assert "escalation level 1" in text
    assert "[FIRING] critical lamp_off_while_due (alert 1)" in text
    assert "[RESOLVED] warning lamp_off_while_due (alert 2)" in text


def test_mqtt_one_message_per_kind_and_area() -> None:
    n = Notification(
        route="feed",
        group_key="feed:{}",
        group_labels={},
        purpose=Purpose.FIRING,
        alerts=(notice(1), notice(2), notice(3, area="110105002"), notice(4, kind="manhole")),
        created_at=T0,
    )
    messages = dict(mqtt_messages(n, "alerts_feed", "cityops/v1"))
    assert set(messages) == {
        "cityops/v1/alerts/streetlight/110105001",
        "cityops/v1/alerts/streetlight/110105002",
        "cityops/v1/alerts/manhole/110105001",
    }
    lamps = messages["cityops/v1/alerts/streetlight/110105001"]
    assert [a["alert_id"] for a in lamps["alerts"]] == [1, 2]

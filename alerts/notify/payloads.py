"""What a notification looks like on the wire: cityops JSON, Alertmanager v4, mail, MQTT."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from alerts.model import AlertNotice, NoticeState
from alerts.notify.model import Notification, Purpose

PAYLOAD_VERSION = "1"
ALERTMANAGER_VERSION = "4"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing


def rfc3339(ts: datetime | None) -> str | None:
    """An aware datetime as RFC 3339 in UTC with a ``Z``; None stays None."""
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _alert(a: AlertNotice) -> dict[str, Any]:
    return {
        "alert_id": a.alert_id,
        "fingerprint": a.fingerprint,
        "rule": a.rule,
        "state": a.state.value,
        "severity": a.severity.value,
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "summary": a.summary,
        "started_at": rfc3339(a.started_at),
        "fired_at": rfc3339(a.fired_at),
        "resolved_at": rfc3339(a.resolved_at),
    }


def cityops_payload(n: Notification, receiver: str) -> dict[str, Any]:
    """The generic JSON body of the ``webhook`` receiver (also stored in ``notifications``)."""
    return {
        "version": PAYLOAD_VERSION,
        "notification_id": str(n.id),
        "purpose": n.purpose.value,
        "level": n.level,
        "status": n.status,
        "receiver": receiver,
        "route": n.route,
        "group_key": n.group_key,
        "group_labels": dict(n.group_labels),
        "common_labels": n.common_labels,
        "created_at": rfc3339(n.created_at),
        "alerts": [_alert(a) for a in n.alerts],
    }


def _generator_url(a: AlertNotice, external_url: str) -> str:
    given = a.annotations.get("generator_url")
    if given:
        return given
    return f"{external_url.rstrip('/')}/api/v1/alerts/{a.alert_id}" if external_url else ""


def _am_labels(a: AlertNotice) -> dict[str, str]:
    labels = dict(a.labels)
    labels.setdefault("alertname", a.rule)
    labels.setdefault("severity", a.severity.value)
    return labels


def _am_annotations(a: AlertNotice) -> dict[str, str]:
    annotations = dict(a.annotations)
    if a.summary:
        annotations.setdefault("summary", a.summary)
    return annotations


def alertmanager_payload(
    n: Notification, receiver: str, *, external_url: str = "", max_alerts: int = 0
) -> dict[str, Any]:
    """The Prometheus Alertmanager webhook body, version 4.

    ``groupKey``, ``groupLabels`` and ``commonLabels`` follow Alertmanager's meaning; reminders
    and escalations are ordinary firing notifications to the receiver (with ``purpose`` and
    ``level`` in ``commonAnnotations`` only when every alert shares them, which they do).
    """
    alerts = list(n.alerts)
    truncated = 0
    if max_alerts and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    labels = [_am_labels(a) for a in n.alerts]
    annotations = [_am_annotations(a) for a in n.alerts]
    common_labels = labels[0] if labels else {}
    for m in labels[1:]:
        common_labels = {k: v for k, v in common_labels.items() if m.get(k) == v}
    common_annotations = annotations[0] if annotations else {}
    for m in annotations[1:]:
        common_annotations = {k: v for k, v in common_annotations.items() if m.get(k) == v}
    if n.purpose in (Purpose.REMINDER, Purpose.ESCALATION):
        common_annotations = {
            **common_annotations,
            "cityops_purpose": n.purpose.value,
            "cityops_level": str(n.level),
        }
    return {
        "version": ALERTMANAGER_VERSION,
        "groupKey": n.group_key,
        "truncatedAlerts": truncated,
        "status": n.status,
        "receiver": receiver,
        "groupLabels": dict(n.group_labels),
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": a.state.value,
                "labels": _am_labels(a),
                "annotations": _am_annotations(a),
                "startsAt": rfc3339(a.fired_at or a.started_at),
                "endsAt": (
                    rfc3339(a.resolved_at) or ZERO_TIME
                    if a.state is NoticeState.RESOLVED
                    else ZERO_TIME
                ),
                "generatorURL": _generator_url(a, external_url),
                "fingerprint": a.fingerprint,
            }
            for a in alerts
        ],
    }


_SUBJECT_PREFIX = {
    Purpose.FIRING: "FIRING",
    Purpose.RESOLVED: "RESOLVED",
    Purpose.REMINDER: "REMINDER",
    Purpose.ESCALATION: "ESCALATION",
}


def email_subject(n: Notification) -> str:
    """``[cityops FIRING:3] manhole_open area_code=110105001``."""
    firing = sum(a.state is NoticeState.FIRING for a in n.alerts)
    prefix = _SUBJECT_PREFIX[n.purpose]
    if n.purpose is Purpose.ESCALATION:
        prefix += f" L{n.level}"
    count = firing if n.purpose is not Purpose.RESOLVED else len(n.alerts)
    group = " ".join(f"{k}={v}" for k, v in n.group_labels.items()) or n.route
    return f"[cityops {prefix}:{count}] {group}"


def email_body(n: Notification) -> str:
    """A plain-text listing of the group's alerts, newest state first."""
    lines = [
        f"{n.purpose.value} notification {n.id}",
        f"route: {n.route}   group: {n.group_key}",
        "",
    ]
    if n.purpose is Purpose.ESCALATION:
        lines.insert(1, f"escalation level {n.level}: these alerts are not acknowledged")
    for a in n.alerts:
        when = rfc3339(a.resolved_at if a.state is NoticeState.RESOLVED else a.fired_at)
        lines.append(f"[{a.state.value.upper()}] {a.severity.value} {a.rule} (alert {a.alert_id})")
        if a.summary:
            lines.append(f"  {a.summary}")
        labels = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()))
        lines.append(f"  {labels}")
        lines.append(f"  since {rfc3339(a.started_at)}; {a.state.value} at {when}")
    return "\n".join(lines) + "\n"


def email_message(n: Notification, *, sender: str, to: tuple[str, ...]) -> EmailMessage:
    """The mail for ``n`` (UTF-8 plain text)."""
    msg = EmailMessage()
    msg["Subject"] = email_subject(n)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["X-Cityops-Notification"] = str(n.id)
    msg["X-Cityops-Purpose"] = n.purpose.value
    msg.set_content(email_body(n))
    return msg


def mqtt_messages(n: Notification, receiver: str, topic_root: str) -> list[tuple[str, Any]]:
    """One ``(topic, body)`` per kind and area in ``n``: ``{root}/alerts/{kind}/{area}``.

    Each body is the cityops JSON restricted to the alerts of that topic; labels missing from an
    alert become ``none`` in the topic.
    """
    by_topic: dict[str, list[AlertNotice]] = defaultdict(list)
    for a in n.alerts:
        kind = a.labels.get("kind") or "none"
        area = a.labels.get("area_code") or "none"
        by_topic[f"{topic_root}/alerts/{kind}/{area}"].append(a)
    out: list[tuple[str, Any]] = []
    for topic, alerts in by_topic.items():
        body = cityops_payload(n, receiver)
        body["alerts"] = [_alert(a) for a in alerts]
        out.append((topic, body))
    return out

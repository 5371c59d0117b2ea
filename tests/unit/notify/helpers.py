"""Notices and a recording sender for notification tests."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from alerts.lifecycle import fingerprint
from alerts.model import AlertNotice, NoticeState
from alerts.notify.model import DeliveryError, Notification
from alerts.notify.routes import RoutesConfig, parse_routes
from alerts.rules import Severity

T0 = datetime(2026, 1, 10, 20, 0, tzinfo=UTC)


def notice(
    alert_id: int,
    *,
    rule: str = "lamp_off_while_due",
    kind: str = "streetlight",
    area: str = "110105001",
    severity: Severity = Severity.WARNING,
    state: NoticeState = NoticeState.FIRING,
    at: datetime = T0,
    inhibited: bool = False,
    **labels: str,
) -> AlertNotice:
    """A notice of device ``L{alert_id}`` (same id, same fingerprint)."""
    all_labels = {
        "alertname": rule,
        "kind": kind,
        "area_code": area,
        "device_id": f"L{alert_id:05d}",
        **labels,
    }
    resolved = state is NoticeState.RESOLVED
    return AlertNotice(
        alert_id=alert_id,
        fingerprint=fingerprint(rule, all_labels),
        rule=rule,
        state=state,
        severity=severity,
        labels=all_labels,
        summary=f"Lamp L{alert_id:05d} is off although it is due on",
        started_at=at,
        fired_at=at,
        resolved_at=at if resolved else None,
        annotations={"runbook": "lighting"},
        inhibited=inhibited,
    )


class RecordingSender:
    """A sender that keeps what it was given; fails the first ``fail_first`` sends."""

    def __init__(self, fail_first: int = 0, *, permanent: bool = False) -> None:
        self.fail_first = fail_first
        self.permanent = permanent
        self.attempts = 0
        self.sent: list[Notification] = []
        self._lock = threading.Lock()
        self.closed = False

    def send(self, n: Notification) -> None:
        """Record ``n`` or fail."""
        with self._lock:
            self.attempts += 1
            if self.attempts <= self.fail_first:
                raise DeliveryError(f"refused attempt {self.attempts}", permanent=self.permanent)
            self.sent.append(n)

    def close(self) -> None:
        """Mark closed."""
        self.closed = True


def routes(text: str) -> RoutesConfig:
    """Parse an inline routes file."""
    return parse_routes(text, "test")

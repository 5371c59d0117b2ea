"""What the engine hands to notifications: one notice per alert state change worth telling."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from alerts.rules import Severity


class NoticeState(StrEnum):
    """The alert state a notice reports."""

    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertNotice:
    """A firing or resolved alert, as receivers see it.

    ``labels`` always carry ``alertname`` (the rule) and, where they apply, ``kind``,
    ``area_code``, ``device_id`` and the group attribute of group rules; routing matches on
    labels plus ``severity``.
    """

    alert_id: int
    fingerprint: str
    rule: str
    state: NoticeState
    severity: Severity
    labels: Mapping[str, str]
    summary: str
    started_at: datetime
    fired_at: datetime | None
    resolved_at: datetime | None
    annotations: Mapping[str, str] = field(default_factory=dict)
    inhibited: bool = False

    @property
    def kind(self) -> str | None:
        """Device kind label, if any."""
        return self.labels.get("kind")

    @property
    def area_code(self) -> str | None:
        """Area label, if any."""
        return self.labels.get("area_code")

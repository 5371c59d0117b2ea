"""A notification: one message about an alert group, to be delivered to each of its receivers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from alerts.model import AlertNotice, NoticeState
from cityops.errors import CityopsError


class Purpose(StrEnum):
    """Why a notification is sent."""

    FIRING = "firing"  # new alerts fired in the group
    RESOLVED = "resolved"  # alerts of the group resolved and none newly fired
    REMINDER = "reminder"  # still firing and not acknowledged after repeat_interval
    ESCALATION = "escalation"  # not acknowledged after a level's escalate_after


class DeliveryError(CityopsError):
    """A receiver did not take a notification; ``permanent`` errors are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, kw_only=True, slots=True)
class Notification:
    """One message about an alert group (one alert or three hundred)."""

    route: str
    group_key: str
    group_labels: Mapping[str, str]
    purpose: Purpose
    alerts: tuple[AlertNotice, ...]
    created_at: datetime
    level: int = 0  # escalation level (0: the route's own receivers)
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def status(self) -> str:
        """``firing`` while any alert in it fires, else ``resolved`` (Alertmanager's meaning)."""
        firing = any(a.state is NoticeState.FIRING for a in self.alerts)
        return NoticeState.FIRING.value if firing else NoticeState.RESOLVED.value

    @property
    def common_labels(self) -> dict[str, str]:
        """Labels every alert carries with the same value."""
        return _common([a.labels for a in self.alerts])

    @property
    def common_annotations(self) -> dict[str, str]:
        """Annotations every alert carries with the same value."""
        return _common([a.annotations for a in self.alerts])


def _common(maps: list[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    common = dict(maps[0])
    for m in maps[1:]:
        common = {k: v for k, v in common.items() if m.get(k) == v}
    return common

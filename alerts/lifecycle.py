"""The alert lifecycle: pending → firing → resolved, one open alert per fingerprint, flap damping.

This module is pure (no I/O, time passed in) so its edges can be tested exactly. The engine feeds
it observations — for each rule and label set, whether the firing condition holds, whether the
clear condition holds, or neither (inside the hysteresis band) — and periodic ticks; it returns
the transitions to store and notify.

Semantics:

- A breach opens a *pending* alert; it *fires* once the breach has lasted the rule's ``for``
  (immediately when ``for`` is 0). Observations inside the hysteresis band leave the state as it
  is. A clear observation drops a pending alert (it never fired) and resolves a firing one.
- Repeated breaches of an open alert change nothing but its last value and time: a fault
  reported a thousand times is one alert.
- No observation means no change: a device that goes silent keeps its value alerts open (its
  offline alert comes from the no-data rule), so silence never resolves a problem.
- Flapping: when an alert has fired ``flap_count`` times within ``flap_window``, it is marked
  flapping and its resolution waits until the clear condition has held for ``flap_window``; a
  new breach meanwhile keeps the same alert open instead of opening another.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class AlertState(StrEnum):
    """Where an alert is in its lifecycle."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class Event(StrEnum):
    """What happened to an alert (stored in ``alert_events``)."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"  # a pending alert whose condition cleared before ``for``
    FLAPPING = "flapping"


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """Stable identity of an alert: the rule name and its labels."""
    blob = json.dumps([rule, sorted(labels.items())], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


@dataclass(kw_only=True)
class OpenAlert:
    """An alert that is pending or firing."""

    fingerprint: str
    rule: str
    labels: dict[str, str]
    state: AlertState
    since: datetime  # when the breach began
    fired_at: datetime | None = None
    last_seen: datetime
    last_value: float | str | None = None
    flapping: bool = False
    clear_since: datetime | None = None  # flapping alert: clear condition held since


@dataclass(frozen=True, kw_only=True, slots=True)
class Transition:
    """One change to store and, for firing/resolved, to notify."""

    event: Event
    alert: OpenAlert
    at: datetime


class Observation(StrEnum):
    """What the rule's conditions say about the latest value."""

    BREACH = "breach"
    CLEAR = "clear"
    BAND = "band"  # neither: inside the hysteresis band


@dataclass(kw_only=True)
class Lifecycle:
    """Tracks every open alert; one per fingerprint."""

    flap_count: int = 4
    flap_window: timedelta = timedelta(hours=1)
    open: dict[str, OpenAlert] = field(default_factory=dict)
    _fires: dict[str, deque[datetime]] = field(default_factory=dict)
    _fingerprints: dict[tuple[str, tuple[tuple[str, str], ...]], str] = field(default_factory=dict)

    def fingerprint_of(self, rule: str, labels: Mapping[str, str]) -> str:
        """``fingerprint(rule, labels)``, cached: the hot path sees the same labels repeatedly."""
        key = (rule, tuple(sorted(labels.items())))
        fp = self._fingerprints.get(key)
        if fp is None:
            if len(self._fingerprints) >= 2_000_000:
                self._fingerprints.clear()
            fp = self._fingerprints[key] = fingerprint(rule, labels)
        return fp

    def observe(
        self,
        rule: str,
        labels: Mapping[str, str],
        observation: Observation,
        at: datetime,
        for_: timedelta,
        value: float | str | None = None,
        *,
        fingerprint: str | None = None,
    ) -> list[Transition]:
        """Apply one observation; return the transitions it causes.

        ``fingerprint``, when the caller has it cached, must be ``fingerprint(rule, labels)``.
        """
        fp = fingerprint or self.fingerprint_of(rule, labels)
        alert = self.open.get(fp)
        if observation is Observation.BAND:
            if alert is not None:
                alert.last_seen = max(alert.last_seen, at)
            return []
        if observation is Observation.BREACH:
            return self._breach(fp, rule, labels, alert, at, for_, value)
        return self._clear(fp, alert, at)

    def _breach(
        self,
        fp: str,
        rule: str,
        labels: Mapping[str, str],
        alert: OpenAlert | None,
        at: datetime,
        for_: timedelta,
        value: float | str | None,
    ) -> list[Transition]:
        out: list[Transition] = []
        if alert is None:
            alert = OpenAlert(
                fingerprint=fp,
                rule=rule,
                labels=dict(labels),
                state=AlertState.PENDING,
                since=at,
                last_seen=at,
                last_value=value,
            )
            self.open[fp] = alert
            out.append(Transition(event=Event.PENDING, alert=alert, at=at))
        else:
            alert.last_seen = max(alert.last_seen, at)
            alert.last_value = value
            alert.clear_since = None
        if alert.state is AlertState.PENDING and at - alert.since >= for_:
            out.extend(self._fire(alert, at))
        return out

    def _fire(self, alert: OpenAlert, at: datetime) -> list[Transition]:
        alert.state = AlertState.FIRING
        alert.fired_at = at
        out = [Transition(event=Event.FIRING, alert=alert, at=at)]
        fires = self._fires.setdefault(alert.fingerprint, deque())
        fires.append(at)
        while fires and at - fires[0] > self.flap_window:
            fires.popleft()
        if not alert.flapping and len(fires) >= self.flap_count:
            alert.flapping = True
            out.append(Transition(event=Event.FLAPPING, alert=alert, at=at))
        return out

    def _clear(self, fp: str, alert: OpenAlert | None, at: datetime) -> list[Transition]:
        if alert is None:
            return []
        alert.last_seen = max(alert.last_seen, at)
        if alert.state is AlertState.PENDING:
            del self.open[fp]
            return [Transition(event=Event.CANCELLED, alert=alert, at=at)]
        if alert.flapping:
            if alert.clear_since is None:
                alert.clear_since = at
            if at - alert.clear_since < self.flap_window:
                return []
        return [self._resolve(fp, alert, at)]

    def _resolve(self, fp: str, alert: OpenAlert, at: datetime) -> Transition:
        alert.state = AlertState.RESOLVED
        del self.open[fp]
        return Transition(event=Event.RESOLVED, alert=alert, at=at)

    def tick(self, now: datetime, for_of: Mapping[str, timedelta]) -> list[Transition]:
        """Time passing: fire pending alerts whose ``for`` elapsed, settle flapping ones.

        ``for_of`` maps rule names to their ``for`` durations.
        """
        out: list[Transition] = []
        for fp, alert in list(self.open.items()):
            if alert.state is AlertState.PENDING:
                if now - alert.since >= for_of.get(alert.rule, timedelta(0)):
                    out.extend(self._fire(alert, now))
            elif (
                alert.flapping
                and alert.clear_since is not None
                and now - alert.clear_since >= self.flap_window
            ):
                out.append(self._resolve(fp, alert, now))
        return out

    def resolve(self, rule: str, labels: Mapping[str, str], at: datetime) -> list[Transition]:
        """Resolve an open alert outright (e.g. its device was retired)."""
        fp = fingerprint(rule, labels)
        alert = self.open.get(fp)
        if alert is None:
            return []
        if alert.state is AlertState.PENDING:
            del self.open[fp]
            return [Transition(event=Event.CANCELLED, alert=alert, at=at)]
        return [self._resolve(fp, alert, at)]

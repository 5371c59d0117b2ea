"""The notifier: routes alert notices into groups, flushes groups, reminds and escalates.

The engine calls :meth:`Notifier.submit` with each batch of notices and :meth:`Notifier.tick`
periodically (about once a second); both read time from the notifier's clock only, so tests drive
group waits, reminders, escalations and retry backoff by moving a :class:`ManualClock`.

Grouping (as Alertmanager): notices taken by the same route with the same values of the route's
``group_by`` labels form a group. A new group is sent ``group_wait`` after its first alert, so the
300 lamp alerts of a cabinet outage arriving together go out as ONE notification; later changes
to the group (new alerts, resolutions) are sent at most every ``group_interval``.

Reminders: while a group has firing alerts that are not acknowledged, the group's receivers get a
reminder listing them every ``repeat_interval`` after the last notification. Escalation: a firing
alert still unacknowledged ``escalate_after`` after it fired is sent to that level's receivers
too; from then on the group's notifications (updates, reminders, resolution) go to them as well.
Acknowledgement comes from the ``is_acknowledged(alert_id)`` callable; a positive answer is
remembered. Inhibited notices are not sent (a resolution of an alert already notified still is).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from psycopg_pool import ConnectionPool

from alerts.model import AlertNotice, NoticeState
from alerts.notify.clock import Clock, SystemClock
from alerts.notify.delivery import ReceiverWorker
from alerts.notify.metrics import NotifyMetrics
from alerts.notify.model import Notification, Purpose
from alerts.notify.receivers import Sender
from alerts.notify.routes import Route, RoutesConfig, RouteTiming
from alerts.notify.store import NotificationStore

log = structlog.get_logger(__name__)


def _never_acknowledged(_alert_id: int) -> bool:
    return False


@dataclass(kw_only=True)
class _Tracked:
    notice: AlertNotice
    fired_ref: datetime  # escalation counts from here
    notified: bool = False  # its firing was in a sent notification
    resolved: bool = False  # resolved; the resolution not yet sent
    level: int = 0  # escalation level reached
    acknowledged: bool = False
    inhibited: bool = False  # notified, then inhibited: no reminders or escalation meanwhile

    @property
    def open_firing(self) -> bool:
        """Notified, still firing, not inhibited: reminders and escalation concern it."""
        return self.notified and not self.resolved and not self.inhibited


@dataclass(kw_only=True)
class _Group:
    key: str
    route: Route
    timing: RouteTiming
    labels: dict[str, str]
    created_at: datetime
    alerts: dict[str, _Tracked] = field(default_factory=dict)
    flushed_at: datetime | None = None
    last_sent_at: datetime | None = None  # reminders count from the last notification
    dirty: bool = False

    def flush_due(self, now: datetime) -> bool:
        if not self.dirty:
            return False
        if self.flushed_at is None:
            return now >= self.created_at + self.timing.group_wait
        return now >= self.flushed_at + self.timing.group_interval

    @property
    def level(self) -> int:
        return max((t.level for t in self.alerts.values()), default=0)


def group_labels(notice: AlertNotice, group_by: Iterable[str]) -> dict[str, str]:
    """The values of the ``group_by`` labels of ``notice`` (``severity`` too); missing ones out."""
    out: dict[str, str] = {}
    for name in group_by:
        value = notice.severity.value if name == "severity" else notice.labels.get(name)
        if value is not None:
            out[name] = value
    return out


def group_key(route: str, labels: Mapping[str, str]) -> str:
    """``route:{alertname="x", area_code="y"}``, Alertmanager's style of group key."""
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{route}:{{{inner}}}"


class Notifier:
    """Turns alert notices into grouped notifications and delivers them to receivers."""

    def __init__(
        self,
        config: RoutesConfig,
        senders: Mapping[str, Sender],
        *,
        clock: Clock | None = None,
        is_acknowledged: Callable[[int], bool] = _never_acknowledged,
        pool: ConnectionPool | None = None,
        metrics: NotifyMetrics | None = None,
    ) -> None:
        missing = [r.name for r in config.receivers if r.name not in senders]
        if missing:
            raise ValueError(f"no sender for receivers {missing}")
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.is_acknowledged = is_acknowledged
        store = NotificationStore(pool) if pool is not None else None
        self.workers = {
            r.name: ReceiverWorker(
                r, senders[r.name], clock=self.clock, store=store, metrics=metrics
            )
            for r in config.receivers
        }
        self._groups: dict[str, _Group] = {}
        self._lock = threading.RLock()
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, tick_interval_s: float | None = None) -> Notifier:
        """Start one delivery worker per receiver; with ``tick_interval_s``, also a thread that
        calls :meth:`tick` that often (else the caller ticks)."""
        for w in self.workers.values():
            w.start()
        if tick_interval_s is not None and self._ticker is None:
            self._stopping.clear()
            self._ticker = threading.Thread(
                target=self._tick_loop, args=(tick_interval_s,), name="notify-tick", daemon=True
            )
            self._ticker.start()
        return self

    def _tick_loop(self, interval_s: float) -> None:
        while not self._stopping.wait(interval_s):
            try:
                self.tick()
            except Exception:  # the ticker must outlive a bad tick
                log.exception("notification_tick_failed")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the ticker and the workers (an attempt in progress is finished); close senders."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            self._stopping.set()
            ticker.join(timeout_s)
        for w in self.workers.values():
            w.stop(timeout_s)

    def __enter__(self) -> Notifier:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until every receiver has attempted what is queued (retries parked for later do
        not count); True when idle."""
        return all(w.wait_idle(timeout_s) for w in self.workers.values())

    # -- input --------------------------------------------------------------------------------

    def submit(self, notices: Sequence[AlertNotice]) -> None:
        """Take the engine's firing and resolved notices; send the groups already due."""
        now = self.clock.now()
        with self._lock:
            for notice in notices:
                self._take(notice, now)
            self._flush_due(now)

    def _take(self, notice: AlertNotice, now: datetime) -> None:
        routes = self.config.routes_for(notice)
        if not routes:
            log.warning("notice_unrouted", alert_id=notice.alert_id, rule=notice.rule)
            return
        firing = notice.state is NoticeState.FIRING
        for route in routes:
            timing = self.config.timing(route)
            labels = group_labels(notice, timing.group_by)
            key = group_key(route.name, labels)
            group = self._groups.get(key)
            tracked = group.alerts.get(notice.fingerprint) if group is not None else None
            if notice.inhibited and (firing or tracked is None or not tracked.notified):
                # Suppressed by a wider outage: tell no one (and forget a firing not yet sent).
                if tracked is not None and group is not None:
                    if tracked.notified:
                        tracked.inhibited = True
                    else:
                        del group.alerts[notice.fingerprint]
                continue
            if group is None:
                group = _Group(key=key, route=route, timing=timing, labels=labels, created_at=now)
                self._groups[key] = group
            if firing:
                self._take_firing(group, tracked, notice, now)
            else:
                self._take_resolved(group, tracked, notice)

    def _take_firing(
        self, group: _Group, tracked: _Tracked | None, notice: AlertNotice, now: datetime
    ) -> None:
        if tracked is None or tracked.resolved:
            group.alerts[notice.fingerprint] = _Tracked(
                notice=notice, fired_ref=notice.fired_at or now
            )
            group.dirty = True
        else:
            tracked.notice = notice  # a repeat: nothing new to tell
            tracked.inhibited = False

    def _take_resolved(self, group: _Group, tracked: _Tracked | None, notice: AlertNotice) -> None:
        if tracked is None:
            # A resolution of an alert this notifier never saw (e.g. after a restart): it may
            # have been notified before, so the resolution is sent.
            group.alerts[notice.fingerprint] = _Tracked(
                notice=notice,
                fired_ref=notice.fired_at or notice.started_at,
                notified=True,
                resolved=True,
            )
            group.dirty = True
            return
        if not tracked.notified:
            # Fired and resolved within group_wait: nobody was told it fired.
            del group.alerts[notice.fingerprint]
            return
        tracked.notice = notice
        tracked.resolved = True
        group.dirty = True

    # -- time ---------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> None:
        """Send due groups, reminders and escalations; put due retries back on their queues."""
        now = now or self.clock.now()
        with self._lock:
            self._flush_due(now)
            ask = self._ack_candidates(now)
        # Outside the lock: a slow acknowledgement lookup never holds up submit().
        answers = self._ask(ask)
        with self._lock:
            for group in list(self._groups.values()):
                # Remind first: a level reached in this tick gets its escalation, not both.
                self._remind(group, now, answers)
                self._escalate(group, now, answers)
        for w in self.workers.values():
            w.requeue_due(now)

    @staticmethod
    def _reminder_due(group: _Group, now: datetime) -> bool:
        last = group.last_sent_at
        return last is not None and now >= last + group.timing.repeat_interval

    @staticmethod
    def _escalation_due(t: _Tracked, group: _Group, now: datetime) -> bool:
        levels = group.route.escalation
        return (
            t.open_firing
            and t.level < len(levels)
            and now >= t.fired_ref + levels[t.level].escalate_after
        )

    def _ack_candidates(self, now: datetime) -> set[int]:
        """Alerts whose acknowledgement decides a reminder or an escalation due now."""
        ids: set[int] = set()
        for group in self._groups.values():
            remind = self._reminder_due(group, now)
            for t in group.alerts.values():
                if t.acknowledged or not t.open_firing:
                    continue
                if remind or self._escalation_due(t, group, now):
                    ids.add(t.notice.alert_id)
        return ids

    def _ask(self, alert_ids: Iterable[int]) -> dict[int, bool]:
        answers: dict[int, bool] = {}
        for alert_id in alert_ids:
            try:
                answers[alert_id] = bool(self.is_acknowledged(alert_id))
            except Exception:  # unreadable: keep telling people rather than fall silent
                log.exception("acknowledgement_check_failed", alert_id=alert_id)
                answers[alert_id] = False
        return answers

    @staticmethod
    def _ack_state(t: _Tracked, answers: Mapping[int, bool]) -> bool | None:
        """True/False as known; None when not asked this tick (it changed meanwhile)."""
        if t.acknowledged:
            return True
        answer = answers.get(t.notice.alert_id)
        if answer:
            t.acknowledged = True  # acknowledgement is not withdrawn
        return answer

    def _recipients(self, group: _Group, level: int) -> list[str]:
        names = list(group.route.receivers)
        for lvl in group.route.escalation[:level]:
            names.extend(n for n in lvl.receivers if n not in names)
        return names

    def _dispatch(self, n: Notification, receivers: Iterable[str]) -> None:
        for name in receivers:
            worker = self.workers[name]
            if n.purpose is Purpose.RESOLVED and not worker.cfg.send_resolved:
                continue
            worker.enqueue(n)
        log.info(
            "notification_dispatched",
            notification_id=str(n.id),
            purpose=n.purpose.value,
            level=n.level,
            group_key=n.group_key,
            alerts=len(n.alerts),
        )

    def _flush_due(self, now: datetime) -> None:
        for key, group in list(self._groups.items()):
            if group.flush_due(now):
                self._flush(group, now)
            if not group.alerts:
                del self._groups[key]

    def _flush(self, group: _Group, now: datetime) -> None:
        tracked = list(group.alerts.values())
        new_firing = any(not t.resolved and not t.notified for t in tracked)
        n = Notification(
            route=group.route.name,
            group_key=group.key,
            group_labels=group.labels,
            purpose=Purpose.FIRING if new_firing else Purpose.RESOLVED,
            alerts=tuple(t.notice for t in tracked),
            created_at=now,
        )
        self._dispatch(n, self._recipients(group, group.level))
        for t in tracked:
            if t.resolved:
                del group.alerts[t.notice.fingerprint]
            else:
                t.notified = True
        group.flushed_at = now
        group.last_sent_at = now
        group.dirty = False

    def _remind(self, group: _Group, now: datetime, answers: Mapping[int, bool]) -> None:
        if not self._reminder_due(group, now):
            return
        firing = [t for t in group.alerts.values() if t.open_firing]
        if not firing:
            return
        unacked = [t for t in firing if self._ack_state(t, answers) is False]
        group.last_sent_at = now
        if not unacked:
            return
        n = Notification(
            route=group.route.name,
            group_key=group.key,
            group_labels=group.labels,
            purpose=Purpose.REMINDER,
            alerts=tuple(t.notice for t in unacked),
            created_at=now,
            level=group.level,
        )
        self._dispatch(n, self._recipients(group, group.level))

    def _escalate(self, group: _Group, now: datetime, answers: Mapping[int, bool]) -> None:
        levels = group.route.escalation
        if not levels:
            return
        reached: dict[int, list[_Tracked]] = {}
        for t in group.alerts.values():
            if not self._escalation_due(t, group, now):
                continue
            if self._ack_state(t, answers) is not False:
                continue
            while t.level < len(levels) and now >= t.fired_ref + levels[t.level].escalate_after:
                t.level += 1
                reached.setdefault(t.level, []).append(t)
        for level in sorted(reached):
            n = Notification(
                route=group.route.name,
                group_key=group.key,
                group_labels=group.labels,
                purpose=Purpose.ESCALATION,
                alerts=tuple(t.notice for t in reached[level]),
                created_at=now,
                level=level,
            )
            self._dispatch(n, levels[level - 1].receivers)

    # -- inspection ---------------------------------------------------------------------------

    def open_groups(self) -> dict[str, int]:
        """Alerts held per group key (firing, or resolved and not yet sent)."""
        with self._lock:
            return {k: len(g.alerts) for k, g in self._groups.items()}

    def counts(self) -> dict[str, dict[str, int]]:
        """Per receiver: notifications sent, failed attempts, given up."""
        return {name: dict(w.counts) for name, w in self.workers.items()}

"""The alert engine: evaluates the rules on each committed batch and on a periodic tick.

It is a ``BatchConsumer``: ingest calls ``on_batch`` after every commit, in process. Readings are
evaluated in event time (their ``ts``); silence (no data) is judged in receive time on ``tick``.
Transitions go to the database in one transaction per batch or tick; the resulting notices are
filtered by silences and inhibition and handed to the notifier; firing alerts of the configured
severities open cases, and complaints in the batch are linked to cases. Member alerts of a group
that may be forming (a cabinet whose lamps go dark one by one) are held for the group rule's
``hold_members`` first, so the group alert inhibits them instead of them being notified before it
(docs/alerts.md, "Silences, maintenance windows and inhibition").
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import structlog
from psycopg_pool import ConnectionPool, PoolTimeout

from alerts import cases, store
from alerts.directory import DeviceDirectory, DeviceInfo
from alerts.lifecycle import AlertState, Lifecycle, Observation, Transition
from alerts.model import AlertNotice, NoticeState
from alerts.rules import (
    AggregateRule,
    AnomalyRule,
    ComplaintSpikeRule,
    GroupRule,
    NoDataRule,
    Rule,
    RuleHolder,
    ScheduleRule,
    Severity,
    StateRule,
    ThresholdRule,
)
from alerts.silence import SilenceWatch
from cityops import catalog, heartbeat, registry_version
from cityops.batch import CAUSES, AnomalyScores, CommittedBatch, KindBatch, StatusChange
from cityops.catalog import Kind, PowerState, ScheduleClass
from cityops.clock import now as process_now
from cityops.schedule import HeatingCalendar, LightingSchedule

log = structlog.get_logger(__name__)

Notify = Callable[[Sequence[AlertNotice]], None]
# A database that cannot be reached (or a pool that gives no connection in time): the
# transitions are kept in order and stored once it answers again (``_commit``).
DB_ERRORS = (psycopg.Error, PoolTimeout)

_POWER = catalog.STREETLIGHT.reading_field("power_state")
_OFF_CODE = (_POWER.allowed or ()).index(PowerState.OFF.value) if _POWER else -1


def _ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# An area's hour enters an aggregate rule only when at least this share of it was observed
# (the metric's coverage metric, else any readings at all): an hour without data is no rate of 0.
AGGREGATE_MIN_COVERAGE = 0.5
AGGREGATE_GRACE = timedelta(minutes=1)
COVERAGE_METRIC = {
    "lighting_rate": "lighting_coverage",
    "lighting_snapshot": "lighting_snapshot_coverage",
    "room_temp_compliance": "room_temp_coverage",
}


def _hour_floor(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def _covered_sums(
    rows: Iterable[tuple[Any, ...]], metric: str, coverage: str | None, skip: datetime
) -> dict[str, tuple[float, float]]:
    """Per area, the metric's numerator and denominator summed over its well-covered hours.

    ``rows`` are ``(area, hour, metric, numerator, denominator, samples)`` of ``metric`` and,
    if it has one, its ``coverage`` metric; the hour ``skip`` is left out.
    """
    cover: dict[tuple[str, datetime], float] = {}
    values: dict[tuple[str, datetime], tuple[float, float, int]] = {}
    for area, hour, name, num, den, samples in rows:
        if name == metric:
            values[(area, hour)] = (float(num), float(den), int(samples or 0))
        elif den:
            cover[(area, hour)] = float(num) / float(den)
    sums: dict[str, tuple[float, float]] = {}
    for (area, hour), (num, den, samples) in values.items():
        if hour == skip:
            continue
        seen = cover.get((area, hour)) if coverage else None
        if seen is None:
            seen = 1.0 if samples > 0 else 0.0
        if seen < AGGREGATE_MIN_COVERAGE:
            continue
        n, d = sums.get(area, (0.0, 0.0))
        sums[area] = (n + num, d + den)
    return sums


def _observe_threshold(rule: ThresholdRule, x: float) -> tuple[Observation | None, Any]:
    if math.isnan(x):
        return None, None
    if rule.breached(x):
        return Observation.BREACH, x
    return (Observation.CLEAR if rule.cleared(x) else Observation.BAND), x


def device_labels(info: DeviceInfo) -> dict[str, str]:
    """The labels every device alert carries."""
    return {"kind": info.kind.value, "area_code": info.area_code, "device_id": info.device_id}


@dataclass(frozen=True, kw_only=True, slots=True)
class _Held:
    """A member alert held back while its group may be forming (``GroupRule.hold_members``)."""

    notice: AlertNotice
    until: datetime


@dataclass(kw_only=True)
class _WindowCache:
    schedule: LightingSchedule
    arrays: dict[ScheduleClass, tuple[int, int, np.ndarray]] = field(default_factory=dict)

    def due_many(self, ts_ms: np.ndarray, cls: ScheduleClass) -> np.ndarray:
        """``due`` for an array of times at once (one searchsorted per batch, not per row)."""
        if ts_ms.size == 0:
            return np.zeros(0, dtype=bool)
        lo, hi = int(ts_ms.min()), int(ts_ms.max())
        self.due(lo, cls)  # makes sure the cached window covers the batch's first time
        start, end, arr = self.arrays[cls]
        if not start <= hi < end:
            return np.array([self.due(int(t), cls) for t in ts_ms], dtype=bool)
        if arr.shape[0] == 0:
            return np.zeros(ts_ms.shape[0], dtype=bool)
        i = np.searchsorted(arr[:, 0], ts_ms, side="right") - 1
        due: np.ndarray = (i >= 0) & (ts_ms < arr[np.clip(i, 0, None), 1])
        return due

    def due(self, ts_ms: int, cls: ScheduleClass) -> bool:
        """Whether a lamp of ``cls`` is due on at ``ts_ms``."""
        cached = self.arrays.get(cls)
        if cached is None or not cached[0] <= ts_ms < cached[1]:
            start = _ms_to_dt(ts_ms) - timedelta(days=3)
            end = _ms_to_dt(ts_ms) + timedelta(days=4)
            arr = self.schedule.window_array(start, end, cls)
            cached = (
                int(start.timestamp() * 1000) + 86_400_000,
                int(end.timestamp() * 1000) - 86_400_000,
                arr,
            )
            self.arrays[cls] = cached
        arr = cached[2]
        i = int(np.searchsorted(arr[:, 0], ts_ms, side="right")) - 1
        return i >= 0 and ts_ms < arr[i, 1]


class AlertEngine:
    """Rules → lifecycle → storage → notices, cases."""

    def __init__(
        self,
        *,
        rules: RuleHolder,
        pool: ConnectionPool,
        schedule: LightingSchedule,
        calendar: HeatingCalendar,
        notify: Notify | None = None,
        clock: Callable[[], datetime] = process_now,
        case_severities: Iterable[Severity] = (Severity.CRITICAL, Severity.WARNING),
        flap_count: int = 4,
        flap_window: timedelta = timedelta(hours=1),
        link_radius_m: float = 300.0,
        link_window: timedelta = timedelta(hours=48),
        owns_area: Callable[[str], bool] | None = None,
        backoff: heartbeat.Backoff | None = None,
        consumer: str | None = None,
        max_lag_s: float = 60.0,
        db_timeout_s: float = 5.0,
    ) -> None:
        self.rules = rules
        # Database outages: transitions not stored yet (in order) and the complaints of their
        # batches, since when they wait (monotonic), the retry schedule, the heartbeat row.
        self._unstored: list[Transition] = []
        self._unstored_complaints: list[Mapping[str, Any]] = []
        self._unstored_since: float | None = None
        self.backoff = backoff or heartbeat.Backoff(0.2, 10.0)
        self.consumer = consumer
        self.max_lag_s = max_lag_s
        self.db_timeout_s = db_timeout_s
        self.db_ok = True
        self.db_failures = 0
        self._last_ok = time.monotonic()  # the last database work that succeeded
        # A partitioned ingest worker evaluates only its partition's areas: their devices,
        # their open alerts and their area-level rules (cityops.partition).
        self.owns_area = owns_area
        self.pool = pool
        self.notify = notify
        self.clock = clock
        self.calendar = calendar
        self.case_severities = frozenset(case_severities)
        self.link_radius_m = link_radius_m
        self.link_window = link_window
        self.lifecycle = Lifecycle(flap_count=flap_count, flap_window=flap_window)
        self.windows = _WindowCache(schedule=schedule)
        self.started_at = clock()
        self.last_heard: dict[str, datetime] = {}
        # Per no-data rule (by name): the devices' deadlines and those found silent, so a tick
        # visits only devices whose deadline passed (alerts.silence), not the whole registry.
        self._silence: dict[str, SilenceWatch] = {}
        # Hot-path caches per device (dropped with the directory on reload_registry): the labels
        # and, per rule, the alert fingerprint — sorting and hashing labels for every rule of
        # every reading was a third of the evaluation cost.
        self._labels: dict[str, dict[str, str]] = {}
        self._fingerprints: dict[tuple[str, str], str] = {}
        # Anomaly episodes (AnomalyRule): since when an open episode's score has stayed below
        # its rule's clear level, by fingerprint. The scores come from the stream core.
        self._calm_since: dict[str, datetime] = {}
        self.anomaly_batches_unscored = 0
        # Firing member alerts not yet notified, by fingerprint (see _hold_of). In memory only:
        # an alert held when the process stops is not notified by the next one.
        self._held: dict[str, _Held] = {}
        # What became of held alerts (for benchmarks and logs): held, then inhibited by their
        # group, released (notified late) or dropped (resolved while held).
        self.hold_counts = {"held": 0, "inhibited": 0, "released": 0, "dropped": 0}
        # Firing member alerts (of inhibiting group rules) that were notified, by fingerprint:
        # when their group alert fires later, the notifier is told they are now inhibited, so
        # it stops reminding and escalating them while the group alert covers them.
        self._told: dict[str, AlertNotice] = {}
        self._lock = threading.Lock()
        self.errors = 0
        with pool.connection() as conn:
            self.registry_version = registry_version.read(conn)
            self.registry_reloads = 0
            self.directory = DeviceDirectory.load(conn, owns_area)
            restored = store.restore_lifecycle(conn, self.lifecycle)
        if owns_area is not None:
            for fp in [
                fp
                for fp, a in self.lifecycle.open.items()
                if not self._owned(a.labels.get("area_code"))
            ]:
                del self.lifecycle.open[fp]
                restored -= 1
        log.info("alert_engine_started", devices=len(self.directory.devices), open_alerts=restored)

    def _owned(self, area: str | None) -> bool:
        """This engine evaluates ``area`` (always, unless it runs in a partitioned worker)."""
        return self.owns_area is None or (area is not None and self.owns_area(area))

    # --- entry points --------------------------------------------------------------------

    def on_batch(self, batch: CommittedBatch) -> None:
        """BatchConsumer: evaluate one committed batch; never raises."""
        try:
            self.process_batch(batch)
        except Exception:
            self.errors += 1
            log.exception("alert_engine_batch_failed", seq=batch.seq)

    def process_batch(self, batch: CommittedBatch) -> list[AlertNotice]:
        """Evaluate a batch; return the notices that were handed to the notifier."""
        with self._lock:
            transitions: list[Transition] = []
            for kind, kb in batch.readings.items():
                scores = batch.anomaly.get(kind)
                transitions += self._eval_readings(kind, kb, scores)
            transitions += self._eval_status(batch.status_changes)
            transitions += self._eval_groups(transitions)
            return self._commit(transitions, batch.complaints)

    def tick(self, now: datetime | None = None) -> list[AlertNotice]:
        """Time-based conditions: for-durations, no data, flapping, areas, complaint spikes.

        While the database is unreachable the area and complaint-spike rules wait for the next
        tick (they read stored rates and complaints); every transition is kept and stored once
        the database answers (``_commit``), and the heartbeat row is written after each tick.
        """
        now = now or self.clock()
        with self._lock:
            for_of = {r.name: r.for_ for r in self.rules.rules.rules}
            transitions = self.lifecycle.tick(now, for_of)
            transitions += self._eval_nodata(now)
            if self.backoff.due():
                try:
                    with self.pool.connection(timeout=self.db_timeout_s) as conn:
                        transitions += self._eval_aggregates(conn, now)
                        transitions += self._eval_complaint_spikes(conn, now)
                    self._db_answered()
                except DB_ERRORS as err:
                    self._db_failed(err, "tick")
            transitions += self._eval_groups(transitions)
            sent = self._commit(transitions, ())
            self._beat()
            return sent

    def lag_s(self) -> float:
        """Seconds the oldest transition not stored yet has waited, or since the database last
        answered while it does not (0: everything stored and the database answering)."""
        since = self._unstored_since
        if since is None and not self.db_ok:
            since = self._last_ok
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def readiness(self) -> dict[str, Any]:
        """For ingest's /readyz: the database reachable and no transition waiting too long."""
        lag = self.lag_s()
        return {
            "ok": lag <= self.max_lag_s,
            "lag_s": round(lag, 3),
            "database": self.db_ok,
            "unstored_transitions": len(self._unstored),
        }

    def _db_answered(self) -> None:
        self.backoff.succeeded()
        self.db_ok = True
        self._last_ok = time.monotonic()

    def _db_failed(self, err: Exception, during: str) -> None:
        self.db_ok = False
        self.db_failures += 1
        wait = self.backoff.failed()
        log.warning(
            "alert_engine_db_failed", during=during, error=str(err).strip(), retry_in_s=wait
        )

    def _beat(self) -> None:
        """Record progress in consumer_heartbeat (skipped while the database is unreachable)."""
        if self.consumer is None or not self.backoff.due():
            return
        try:
            with self.pool.connection(timeout=self.db_timeout_s) as conn:
                heartbeat.write(conn, self.consumer, lag_s=self.lag_s())
        except DB_ERRORS as err:
            self._db_failed(err, "heartbeat")
            return
        if not self._unstored:
            self._db_answered()

    def stop(self) -> None:
        """Store what is still waiting (one attempt) and mark the heartbeat row stopped."""
        with self._lock:
            self.backoff.succeeded()
            self._commit([], ())
            if self.consumer is None:
                return
            try:
                with self.pool.connection(timeout=self.db_timeout_s) as conn:
                    heartbeat.write(conn, self.consumer, lag_s=self.lag_s(), stopped=True)
            except DB_ERRORS as err:
                self._db_failed(err, "stop")

    def reload_registry(self) -> None:
        """Pick up registry changes (nothing is read while the registry's change counter,
        cityops.registry_version, has not moved)."""
        with self.pool.connection() as conn:
            version = registry_version.read(conn)
            if version is not None and version == self.registry_version:
                return
            directory = DeviceDirectory.load(conn, self.owns_area)
        self.registry_version = version
        self.registry_reloads += 1
        with self._lock:
            for watch in self._silence.values():
                watch.registry_changed(self.directory, directory, self.last_heard)
            self.directory = directory
            self._labels.clear()
            self._fingerprints.clear()

    # --- readings ------------------------------------------------------------------------

    def _rules_for(self, kind: Kind) -> list[Rule]:
        return [
            r
            for r in self.rules.rules.enabled()
            if r.kind is kind
            and isinstance(r, ThresholdRule | StateRule | ScheduleRule | AnomalyRule)
        ]

    def _eval_readings(  # noqa: PLR0912 (one pass over the readings, every rule type)
        self, kind: Kind, kb: KindBatch, scores: AnomalyScores | None = None
    ) -> list[Transition]:
        rules = self._rules_for(kind)
        if scores is None and any(isinstance(r, AnomalyRule) for r in rules):
            # The stream core did not score this batch (not wired in, or it failed): anomaly
            # rules cannot judge it; counted so it shows, instead of alerting on nothing.
            self.anomaly_batches_unscored += 1
            rules = [r for r in rules if not isinstance(r, AnomalyRule)]
        nodata = [
            r
            for r in self.rules.rules.enabled()
            if isinstance(r, NoDataRule) and r.kind in (None, kind)
        ]
        out: list[Transition] = []
        order = np.argsort(kb.ts_ms, kind="stable").tolist()
        ts_ms = kb.ts_ms.tolist()
        received_ms = kb.received_ms.tolist()
        due: dict[ScheduleClass, np.ndarray] = {}
        if any(isinstance(r, ScheduleRule) for r in rules):
            due = {cls: self.windows.due_many(kb.ts_ms, cls) for cls in ScheduleClass}
        for i in order:
            device_id = str(kb.device_ids[i])
            info = self.directory.get(device_id)
            if info is None or not info.in_service:
                continue
            at = _ms_to_dt(ts_ms[i])
            heard = _ms_to_dt(received_ms[i])
            last = self.last_heard.get(device_id)
            if last is None or heard > last:
                self.last_heard[device_id] = heard
            labels = self._labels.get(device_id)
            if labels is None:
                labels = self._labels[device_id] = device_labels(info)
            for nd in nodata:
                out += self.lifecycle.observe(
                    nd.name,
                    labels,
                    Observation.CLEAR,
                    at,
                    nd.for_,
                    fingerprint=self._fingerprint(nd.name, device_id, labels),
                )
            for rule in rules:
                if rule.active == "heating_season" and not self.calendar.in_season(at):
                    obs: Observation | None = Observation.CLEAR
                    value: Any = None
                elif isinstance(rule, ScheduleRule):
                    obs, value = self._observe_schedule(rule, kb, i, info, due)
                elif isinstance(rule, AnomalyRule):
                    obs, value = self._observe_anomaly(
                        rule, kb, i, scores, self._fingerprint(rule.name, device_id, labels), at
                    )
                else:
                    obs, value = self._observe(rule, kb, i, info)
                if obs is not None:
                    out += self.lifecycle.observe(
                        rule.name,
                        labels,
                        obs,
                        at,
                        rule.for_,
                        value,
                        fingerprint=self._fingerprint(rule.name, device_id, labels),
                    )
        return out

    def _fingerprint(self, rule: str, device_id: str, labels: Mapping[str, str]) -> str:
        fp = self._fingerprints.get((rule, device_id))
        if fp is None:
            fp = self._fingerprints[(rule, device_id)] = self.lifecycle.fingerprint_of(rule, labels)
        return fp

    def _observe(
        self, rule: Rule, kb: KindBatch, i: int, info: DeviceInfo
    ) -> tuple[Observation | None, Any]:
        if isinstance(rule, ThresholdRule):
            return _observe_threshold(rule, float(kb.columns[rule.field][i]))
        if isinstance(rule, StateRule):
            v = kb.decode(rule.field, i)
            if v is None:
                return None, None
            return (Observation.BREACH if v in rule.values else Observation.CLEAR), v
        return None, None

    def _observe_schedule(
        self,
        rule: ScheduleRule,
        kb: KindBatch,
        i: int,
        info: DeviceInfo,
        due_by_class: Mapping[ScheduleClass, np.ndarray],
    ) -> tuple[Observation | None, Any]:
        code = int(kb.columns["power_state"][i])
        if code < 0:
            return None, None
        cls = ScheduleClass(info.attributes.get("schedule_class", ScheduleClass.MAINS.value))
        due = bool(due_by_class[cls][i])
        lit = code != _OFF_CODE
        state = kb.decode("power_state", i)
        if rule.condition == "off_while_due":
            return (Observation.BREACH if due and not lit else Observation.CLEAR), state
        return (Observation.BREACH if lit and not due else Observation.CLEAR), state

    def _observe_anomaly(  # noqa: PLR0911 (one return per episode state)
        self,
        rule: AnomalyRule,
        kb: KindBatch,
        i: int,
        scores: AnomalyScores | None,
        fingerprint: str,
        at: datetime,
    ) -> tuple[Observation | None, Any]:
        """Episode semantics on the stream core's score (see ``AnomalyRule``)."""
        if scores is None or scores.field != rule.field:
            return None, None
        score = float(scores.score[i])
        if math.isnan(score):
            return None, None
        x = float(kb.columns[rule.field][i])
        spec = catalog.KINDS[kb.kind].reading_field(rule.field)
        unit = f" {spec.unit}" if spec is not None and spec.unit else ""
        value = f"{x:g}{unit} ({CAUSES[int(scores.cause[i])]}, score {score:.1f})"
        if score >= rule.score:
            self._calm_since.pop(fingerprint, None)
            return Observation.BREACH, value
        if fingerprint not in self.lifecycle.open:
            return Observation.CLEAR, value
        if score >= rule.clear_below:
            self._calm_since.pop(fingerprint, None)
            return Observation.BAND, value
        since = self._calm_since.setdefault(fingerprint, at)
        if at - since >= rule.hold:
            del self._calm_since[fingerprint]
            return Observation.CLEAR, value
        return Observation.BAND, value

    def _eval_status(self, changes: Sequence[StatusChange]) -> list[Transition]:
        out: list[Transition] = []
        nodata = [r for r in self.rules.rules.enabled() if isinstance(r, NoDataRule)]
        for ch in changes:
            info = self.directory.get(ch.device_id)
            if info is None or not info.in_service:
                continue
            labels = device_labels(info)
            for rule in nodata:
                if rule.kind not in (None, info.kind):
                    continue
                obs = Observation.CLEAR if ch.online else Observation.BREACH
                out += self.lifecycle.observe(
                    rule.name,
                    labels,
                    obs,
                    ch.ts,
                    rule.for_,
                    "online" if ch.online else "offline (last will)",
                )
            if ch.online:
                self.last_heard[ch.device_id] = max(self.last_heard.get(ch.device_id, ch.ts), ch.ts)
        return out

    # --- time-based --------------------------------------------------------------------------

    def _eval_nodata(self, now: datetime) -> list[Transition]:
        """Breach every no-data rule for each device silent too long (alerts.silence)."""
        out: list[Transition] = []
        watches: dict[str, SilenceWatch] = {}
        for rule in self.rules.rules.enabled():
            if not isinstance(rule, NoDataRule):
                continue
            watch = self._silence.get(rule.name)
            if watch is None or watch.key != (rule.kind, rule.intervals, rule.interval):
                watch = SilenceWatch(rule, self.directory, self.last_heard, self.started_at)
            watch.rule = rule  # the same condition; for_ and severity may have changed
            watches[rule.name] = watch
            for info, silent in watch.silent(now, self.directory, self.last_heard):
                out += self.lifecycle.observe(
                    rule.name,
                    device_labels(info),
                    Observation.BREACH,
                    now,
                    rule.for_,
                    f"silent {int(silent.total_seconds())} s",
                )
        self._silence = watches  # rules removed or disabled stop being watched
        return out

    def _eval_aggregates(self, conn: psycopg.Connection[Any], now: datetime) -> list[Transition]:
        out: list[Transition] = []
        for rule in self.rules.rules.enabled():
            if not isinstance(rule, AggregateRule):
                continue
            # Complete hours only: an hour in progress has its whole scheduled denominator
            # but only the minutes so far in its numerator, so it would read as an outage. An
            # hour counts as complete a minute after its end (the stream core has written its
            # last readings), and the hour in which this engine started is skipped: nothing
            # saw its beginning (a fresh start has no lamp state for its first minutes, a
            # restart a gap). Hours without enough coverage are skipped in _covered_sums.
            until = _hour_floor(now - AGGREGATE_GRACE)
            since = _hour_floor(now - AGGREGATE_GRACE - rule.window)
            skip = _hour_floor(self.started_at)
            if since >= until:
                continue
            coverage = COVERAGE_METRIC.get(rule.metric)
            rows = conn.execute(
                "SELECT area_code, hour, metric, numerator, denominator, samples "
                "FROM rates_hourly WHERE kind = %s AND metric = ANY(%s) "
                "AND hour >= %s AND hour < %s",
                (
                    rule.kind.value if rule.kind else None,
                    [rule.metric, coverage] if coverage else [rule.metric],
                    since,
                    until,
                ),
            ).fetchall()
            for area, (num, den) in _covered_sums(rows, rule.metric, coverage, skip).items():
                if not self._owned(area):
                    continue
                labels = {"kind": rule.kind.value if rule.kind else "", "area_code": area}
                if den < max(rule.min_denominator, 1e-12):
                    continue
                rate = num / den
                obs = Observation.BREACH if rate < rule.below else Observation.CLEAR
                out += self.lifecycle.observe(
                    rule.name, labels, obs, now, rule.for_, round(rate, 4)
                )
        return out

    def _eval_complaint_spikes(
        self, conn: psycopg.Connection[Any], now: datetime
    ) -> list[Transition]:
        out: list[Transition] = []
        for rule in self.rules.rules.enabled():
            if not isinstance(rule, ComplaintSpikeRule):
                continue
            category = rule.category.value if rule.category else None
            counts = dict(
                conn.execute(
                    "SELECT area_code, count(*) FROM complaints WHERE received_at > %s "
                    "AND received_at <= %s AND (%s::text IS NULL OR category = %s) "
                    "AND area_code IS NOT NULL GROUP BY area_code",
                    (now - rule.window, now, category, category),
                ).fetchall()
            )
            open_areas = {
                a.labels.get("area_code")
                for a in self.lifecycle.open.values()
                if a.rule == rule.name
            }
            for area in set(counts) | {a for a in open_areas if a}:
                if not self._owned(area):
                    continue
                n = int(counts.get(area, 0))
                labels = {"area_code": str(area)}
                if category:
                    labels["category"] = category
                obs = Observation.BREACH if n >= rule.count else Observation.CLEAR
                out += self.lifecycle.observe(rule.name, labels, obs, now, rule.for_, n)
        return out

    # --- groups and inhibition -----------------------------------------------------------

    def _group_rules(self) -> list[GroupRule]:
        return [r for r in self.rules.rules.enabled() if isinstance(r, GroupRule)]

    def _eval_groups(self, transitions: Sequence[Transition]) -> list[Transition]:
        groups = self._group_rules()
        if not groups or not transitions:
            return []
        out: list[Transition] = []
        for g in groups:
            if g.kind is None:  # the rule model requires a kind; this keeps mypy informed
                continue
            touched: dict[str, datetime] = {}
            for t in transitions:
                if t.alert.rule != g.member_rule:
                    continue
                info = self.directory.get(t.alert.labels.get("device_id", ""))
                if info is None or info.kind is not g.kind:
                    continue
                value = info.attributes.get(g.group_attribute)
                if isinstance(value, str):
                    touched[value] = max(touched.get(value, t.at), t.at)
            for value, at in touched.items():
                members = self.directory.members(g.kind, g.group_attribute, value)
                if not members:
                    continue
                firing = 0
                areas: dict[str, int] = {}
                for device_id in members:
                    info = self.directory.devices[device_id]
                    areas[info.area_code] = areas.get(info.area_code, 0) + 1
                    alert = self.lifecycle.open.get(
                        self.lifecycle.fingerprint_of(g.member_rule, device_labels(info))
                    )
                    if alert is not None and alert.state is AlertState.FIRING:
                        firing += 1
                labels = {
                    "kind": g.kind.value,
                    "area_code": max(areas, key=areas.__getitem__),
                    g.group_attribute: value,
                }
                met = firing >= g.min_members and firing / len(members) >= g.min_fraction
                obs = Observation.BREACH if met else Observation.CLEAR
                out += self.lifecycle.observe(
                    g.name, labels, obs, at, g.for_, f"{firing}/{len(members)}"
                )
        return out

    def _hold_of(self, notice: AlertNotice) -> timedelta | None:
        """How long to hold this firing member alert, or None to notify it now.

        A group rule with ``hold_members`` holds its member alerts while another member of the
        same group is also in the member rule (pending or firing) since a moment at most
        ``hold_members`` apart: the members of a cabinet that lost power fire one by one over
        a few minutes, and the group alert forms only once enough of them fire. Held, they are
        inhibited by it instead of notified first. A lone member, or one whose neighbour has
        been dark for hours (an unrelated fault), is notified at once.
        """
        device_id = notice.labels.get("device_id")
        info = self.directory.get(device_id) if device_id else None
        if info is None:
            return None
        hold: timedelta | None = None
        for g in self._group_rules():
            if (
                g.hold_members <= timedelta(0)
                or not g.inhibits_members
                or g.member_rule != notice.rule
                or g.kind is not info.kind
            ):
                continue
            value = info.attributes.get(g.group_attribute)
            if not isinstance(value, str):
                continue
            for m in self.directory.members(g.kind, g.group_attribute, value):
                if m == device_id:
                    continue
                labels = device_labels(self.directory.devices[m])
                other = self.lifecycle.open.get(
                    self.lifecycle.fingerprint_of(g.member_rule, labels)
                )
                if other is not None and abs(other.since - notice.started_at) <= g.hold_members:
                    hold = g.hold_members if hold is None else max(hold, g.hold_members)
                    break
        return hold

    def _inhibitor(self, notice: AlertNotice) -> str | None:
        """The firing group alert that covers this member alert, if any."""
        device_id = notice.labels.get("device_id")
        info = self.directory.get(device_id) if device_id else None
        if info is None:
            return None
        for g in self._group_rules():
            if not g.inhibits_members or g.member_rule != notice.rule or g.kind is not info.kind:
                continue
            value = info.attributes.get(g.group_attribute)
            if not isinstance(value, str):
                continue
            areas: dict[str, int] = {}
            for m in self.directory.members(g.kind, g.group_attribute, value):
                a = self.directory.devices[m].area_code
                areas[a] = areas.get(a, 0) + 1
            if not areas:
                continue
            labels = {
                "kind": g.kind.value,
                "area_code": max(areas, key=areas.__getitem__),
                g.group_attribute: value,
            }
            alert = self.lifecycle.open.get(self.lifecycle.fingerprint_of(g.name, labels))
            if alert is not None and alert.state is AlertState.FIRING:
                return alert.fingerprint
        return None

    # --- commit --------------------------------------------------------------------------

    def _route(
        self,
        conn: psycopg.Connection[Any],
        notice: AlertNotice,
        was_inhibited: bool,
        silences: Sequence[store.Silence],
        now: datetime,
        sent: list[AlertNotice],
    ) -> None:
        """Inhibit, hold, drop or release one notice of this commit."""
        if notice.state is NoticeState.FIRING:
            inhibitor = self._inhibitor(notice)
            if inhibitor is not None:
                self._mark_inhibited(conn, notice, inhibitor, now)
                return
            hold = self._hold_of(notice)
            if hold is not None:
                self._held[notice.fingerprint] = _Held(notice=notice, until=now + hold)
                self.hold_counts["held"] += 1
                return
        elif self._held.pop(notice.fingerprint, None) is not None:
            self.hold_counts["dropped"] += 1
            return  # fired and resolved while held: nobody was told it fired
        elif was_inhibited:
            # Its firing was never notified: the notifier drops this resolution.
            notice = replace(notice, inhibited=True)
        if notice.state is NoticeState.RESOLVED:
            self._told.pop(notice.fingerprint, None)
        self._release(conn, notice, silences, now, sent)

    def _settle_held(
        self,
        conn: psycopg.Connection[Any],
        silences: Sequence[store.Silence],
        now: datetime,
        sent: list[AlertNotice],
    ) -> None:
        """Inhibit held alerts whose group alert now fires; release those held long enough."""
        for fp, held in list(self._held.items()):
            inhibitor = self._inhibitor(held.notice)
            if inhibitor is not None:
                del self._held[fp]
                self.hold_counts["inhibited"] += 1
                self._mark_inhibited(conn, held.notice, inhibitor, now)
            elif now >= held.until:
                del self._held[fp]
                self.hold_counts["released"] += 1
                self._release(conn, held.notice, silences, now, sent)

    @staticmethod
    def _inhibited_ids(conn: psycopg.Connection[Any], notices: Sequence[AlertNotice]) -> set[int]:
        """The resolved notices' alerts that were inhibited when they fired."""
        ids = [n.alert_id for n in notices if n.state is NoticeState.RESOLVED]
        if not ids:
            return set()
        rows = conn.execute(
            "SELECT id FROM alerts WHERE id = ANY(%s) AND inhibited_by IS NOT NULL", (ids,)
        ).fetchall()
        return {int(r[0]) for r in rows}

    @staticmethod
    def _mark_inhibited(
        conn: psycopg.Connection[Any], notice: AlertNotice, inhibitor: str, now: datetime
    ) -> None:
        conn.execute(
            "UPDATE alerts SET inhibited_by = %s WHERE id = %s", (inhibitor, notice.alert_id)
        )
        conn.execute(
            store.EVENT_SQL,
            (
                notice.alert_id,
                now,
                "inhibited",
                "cityops",
                psycopg.types.json.Jsonb({"by": inhibitor}),
            ),
        )

    def _release(
        self,
        conn: psycopg.Connection[Any],
        notice: AlertNotice,
        silences: Sequence[store.Silence],
        now: datetime,
        sent: list[AlertNotice],
    ) -> None:
        """Silence it, or open its case and add it to the notices to send."""
        labels = {**notice.labels, "severity": notice.severity.value}
        silence = next((s for s in silences if s.matches(labels)), None)
        if silence is not None:
            conn.execute(
                "UPDATE alerts SET silenced_by = %s WHERE id = %s", (silence.id, notice.alert_id)
            )
            conn.execute(
                store.EVENT_SQL,
                (
                    notice.alert_id,
                    now,
                    "silenced",
                    "cityops",
                    psycopg.types.json.Jsonb({"silence": silence.id}),
                ),
            )
            return
        if notice.state is NoticeState.FIRING and notice.severity in self.case_severities:
            case_id = cases.open_for_alert(conn, notice, self.directory, now)
            notice = replace(notice, annotations={**notice.annotations, "case_id": str(case_id)})
        if notice.state is NoticeState.FIRING and any(
            g.inhibits_members and g.member_rule == notice.rule for g in self._group_rules()
        ):
            self._told[notice.fingerprint] = notice
        sent.append(notice)

    def _now_inhibited(self, notice: AlertNotice) -> list[AlertNotice]:
        """For a group alert that fires: its members already notified, marked inhibited."""
        if notice.state is not NoticeState.FIRING or not self._told:
            return []
        g = next((r for r in self._group_rules() if r.name == notice.rule), None)
        value = notice.labels.get(g.group_attribute) if g is not None else None
        if g is None or g.kind is None or not g.inhibits_members or value is None:
            return []
        out: list[AlertNotice] = []
        for m in self.directory.members(g.kind, g.group_attribute, value):
            labels = device_labels(self.directory.devices[m])
            told = self._told.get(self.lifecycle.fingerprint_of(g.member_rule, labels))
            if told is not None:
                out.append(replace(told, inhibited=True))
        return out

    def _commit(
        self, transitions: Sequence[Transition], complaints: Sequence[Mapping[str, Any]]
    ) -> list[AlertNotice]:
        """Store the transitions waiting from earlier failures and these, in order, then notify.

        When the database cannot be reached (or the back-off says not yet) they are all kept,
        and stored with the next batch or tick that reaches it; their notices go out then.
        """
        if self._unstored or self._unstored_complaints:
            transitions = [*self._unstored, *transitions]
            complaints = [*self._unstored_complaints, *complaints]
        if not transitions and not complaints and not self._held:
            return []
        if not self.backoff.due():
            self._keep(transitions, complaints)
            return []
        try:
            sent = self._store(transitions, complaints)
        except DB_ERRORS as err:
            self._keep(transitions, complaints)
            self._db_failed(err, "commit")
            return []
        if self._unstored_since is not None:
            log.info("alert_engine_caught_up", transitions=len(transitions), lag_s=self.lag_s())
        self._unstored, self._unstored_complaints, self._unstored_since = [], [], None
        self._db_answered()
        if sent and self.notify is not None:
            try:
                self.notify(sent)
            except Exception:
                self.errors += 1
                log.exception("alert_notify_failed", notices=len(sent))
        return sent

    def _keep(
        self, transitions: Sequence[Transition], complaints: Sequence[Mapping[str, Any]]
    ) -> None:
        self._unstored = list(transitions)
        self._unstored_complaints = list(complaints)
        if self._unstored_since is None and (transitions or complaints):
            self._unstored_since = time.monotonic()

    def _store(
        self, transitions: Sequence[Transition], complaints: Sequence[Mapping[str, Any]]
    ) -> list[AlertNotice]:
        now = self.clock()
        sent: list[AlertNotice] = []
        with self.pool.connection(timeout=self.db_timeout_s) as conn, conn.transaction():
            notices = store.apply_transitions(conn, transitions, self.rules.rules)
            silences = store.active_silences(conn, now) if notices or self._held else []
            inhibited = self._inhibited_ids(conn, notices)
            for notice in notices:
                self._route(conn, notice, notice.alert_id in inhibited, silences, now, sent)
            self._settle_held(conn, silences, now, sent)
            sent += [m for n in sent for m in self._now_inhibited(n)]
            for complaint in complaints:
                cases.link_complaint(
                    conn,
                    complaint,
                    self.directory,
                    now,
                    radius_m=self.link_radius_m,
                    window=self.link_window,
                )
        return sent

"""Live mode: the ingest consumer that keeps rates and sensor state current from each batch.

``LiveRates.on_batch`` runs in the ingest process after each commit and only touches memory: it
folds the batch into the per-kind kernel state and the in-memory sums of the hours the readings
touch, updates the per-sensor state, counts heating complaints and notes late readings. ``flush``
(called about once a second by ``start``'s thread, or directly) recomputes the hours late
readings re-opened from the database, upserts every touched hour to ``rates_hourly`` and
publishes one snapshot per area on ``cityops/v1/live/{area}``.

Database outages and restarts (docs/rates.md, "Outages and restarts"):

- The connection is reopened with ingest's back-off (``ingest.retry_initial_s`` doubling up to
  ``ingest.retry_max_s``) when it fails; snapshots keep being published from memory meanwhile.
- The hours a failed flush could not write are recomputed from the stored readings once the
  database is back (ingest stores every batch before handing it on, so the stored readings are
  the truth), and ``lag_s`` (the ``cityops_stream_lag_seconds`` gauge, ingest's and the API's
  ``/readyz``) says how long committed batches have been waiting to reach ``rates_hourly``.
- A recompute must not count twice a batch that is committed but not yet folded. In ingest the
  consumer placed right after this one (``catch_up_point``) takes the database snapshot for the
  recompute between two batches, and the sums of the batches folded after that snapshot are
  added to the recomputed ones (``_catch_up``).
- At start (``from_db`` with a ``consumer`` name) the hours from the stored ``resume_from`` of
  ``consumer_heartbeat`` on are rebuilt from the stored readings through the live kernel state,
  so the hour in progress continues from what is stored instead of restarting from zero.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import psycopg
import structlog

from cityops import heartbeat, registry_version
from cityops.batch import AnomalyScores, CommittedBatch, KindBatch, StatusChange
from cityops.catalog import Kind
from cityops.errors import DatabaseError
from cityops.partition import area_filter
from cityops.schedule import HeatingCalendar
from cityops.settings import Settings
from stream import complaints, kernels, rollups
from stream.engine import HOUR_MS, Folder
from stream.rates import RateRow, kind_rates
from stream.recompute import Recomputer, complaint_counts, read_columns
from stream.registry import AreaIndex, DeviceIndex, load_areas, load_devices
from stream.state import STATE_FIELD, SensorState

log = structlog.get_logger(__name__)

LIVE_TOPIC = "cityops/v1/live/{area}"
Publish = Callable[[str, bytes], None]
Connect = Callable[[], psycopg.Connection[Any]]
DB_ERRORS = (psycopg.Error, DatabaseError)
_OPEN_END_MS = int(datetime(9999, 1, 1, tzinfo=UTC).timestamp() * 1000)


@dataclass(kw_only=True)
class _KindLive:
    folder: Folder
    state: SensorState
    hours: dict[int, np.ndarray]  # epoch hour -> (n_areas, slots) int64
    dirty: set[int]
    reopened: set[int]
    late: int = 0
    evicted_below: int = -(2**62)  # hours before this were dropped from memory


@dataclass(kw_only=True)
class _Work:
    """Hours to recompute from one database snapshot, and the sums held when it was taken."""

    pending: dict[Kind, set[int]]
    base: dict[Kind, dict[int, np.ndarray]] = field(default_factory=dict)
    complaints: dict[int, np.ndarray] = field(default_factory=dict)


class _CatchUpPoint:
    """The consumer after ``LiveRates`` in ingest: between two batches, nothing is in flight."""

    def __init__(self, live: LiveRates) -> None:
        self.live = live

    def on_batch(self, batch: CommittedBatch) -> None:
        """BatchConsumer: take the snapshot for a pending recompute, if one is wanted."""
        self.live.take_snapshot()


class LiveRates:
    """A ``cityops.batch.BatchConsumer`` that keeps rates_hourly and live snapshots current."""

    def __init__(
        self,
        settings: Settings,
        areas: AreaIndex,
        devices: Mapping[Kind, DeviceIndex],
        *,
        conn: psycopg.Connection[Any] | None = None,
        connect: Connect | None = None,
        consumer: str | None = None,
        publish: Publish | None = None,
        clock: Callable[[], float] = time.time,
        keep_hours: int = 48,
    ) -> None:
        self.settings = settings
        self.areas = areas
        self.devices = devices
        self.conn = conn
        self.connect = connect  # reopens the connection after a failure (None: never)
        self.consumer = consumer  # the consumer_heartbeat row (None: none written or read)
        self.publish = publish
        self.clock = clock
        self.keep_hours = keep_hours
        self._lock = threading.Lock()
        self._kinds: dict[Kind, _KindLive] = {}
        for kind, index in devices.items():
            self._kinds[kind] = _KindLive(
                folder=Folder(kind_rates(kind, settings), index, areas),
                state=SensorState(kind, len(index), settings.stream, settings.timezone),
                hours={},
                dirty=set(),
                reopened=set(),
            )
        self._calendar = HeatingCalendar(settings.schedule, settings.timezone)
        self._complaints: dict[int, np.ndarray] = {}  # epoch hour -> (n_areas,) counts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.consumer_errors = 0
        self.recomputed_hours = 0  # hours re-opened by late data and recomputed from the database
        self.state_saved_at = time.monotonic()  # the save schedule runs on the machine's time
        self.states_restored = 0
        self.hours_restored = 0  # hours in progress rebuilt from the stored readings at start
        # database health: the back-off of reconnects, failures, the last flush that left
        # nothing waiting (monotonic), and the snapshot connection and work of catch_up_point
        self.backoff = heartbeat.Backoff(
            settings.ingest.retry_initial_s, settings.ingest.retry_max_s
        )
        self.db_ok = conn is not None
        self.flush_failures = 0
        self.last_clean = time.monotonic()
        self.fenced = False
        self._read: psycopg.Connection[Any] | None = None
        self._work: _Work | None = None
        # idle-time recomputes (no batch to carry the catch-up point): batches folded at the
        # last flush, and (batches at the snapshot, its hours) until a later batch shows up
        self._batches_seen = 0
        self._suspect: tuple[int, dict[Kind, set[int]]] | None = None
        # the registry's change counter when the devices were read (cityops.registry_version):
        # reload_registry reads them again only when it moved
        self.registry_version: int | None = None
        self.registry_reloads = 0

    @classmethod
    def from_db(
        cls,
        settings: Settings,
        conn: psycopg.Connection[Any],
        *,
        publish: Publish | None = None,
        connect: Connect | None = None,
        consumer: str | None = None,
    ) -> LiveRates:
        """A consumer for every kind with the registry loaded from ``conn`` (autocommit).

        The connection is then used by ``flush`` only (one thread at a time, under the lock).
        A partitioned ingest worker (``ingest.partitions`` > 1) keeps only its partition's
        areas, so it never writes rates for areas whose readings another worker receives.
        With ``consumer`` (its ``consumer_heartbeat`` row) the hours in progress are restored
        from the stored readings (``restore_hours``) and progress is recorded at every flush.
        """
        version = registry_version.read(conn)
        areas = load_areas(conn, area_filter(settings.ingest))
        devices = {kind: load_devices(conn, kind, areas) for kind in Kind}
        live = cls(
            settings, areas, devices, conn=conn, connect=connect, consumer=consumer,
            publish=publish,
        )  # fmt: skip
        live.registry_version = version
        live.restore_state()
        live.restore_hours()
        return live

    def restore_state(self) -> int:
        """Load the saved detector state of this consumer's devices; return how many sensors."""
        if self.conn is None:
            return 0
        restored = 0
        with self._lock:
            for live in self._kinds.values():
                index = live.folder.devices
                restored += live.state.restore(self.conn, index.ids, index.lookup)
        self.states_restored = restored
        log.info("sensor_state_restored", sensors=restored)
        return restored

    def restore_hours(self) -> int:
        """Rebuild the hours from the stored ``resume_from`` on from the stored readings.

        Called at start, before ingest hands on any batch. Every stored reading from the
        kind's lookback before ``resume_from`` on is folded through the live kernel, so the
        in-memory sums and each device's kernel state are what they would be had this process
        seen them all; the rebuilt hours are written, and hours before ``resume_from`` that a
        batch touches later are recomputed from the database (never overwritten by partial
        sums). Without a stored ``resume_from`` (the first start) nothing is restored.
        Returns the hours restored.
        """
        if self.conn is None or self.consumer is None:
            return 0
        start = heartbeat.resume_from(self.conn, self.consumer)
        if start is None:
            log.info("live_hours_not_restored", reason="no progress stored yet")
            return 0
        h0 = int(start.timestamp() * 1000) // HOUR_MS
        restored = 0
        with self._lock:
            for kind, live in self._kinds.items():
                restored += self._restore_kind(self.conn, kind, live, h0)
        self.hours_restored = restored
        log.info("live_hours_restored", since=start.isoformat(), hours=restored)
        return restored

    def _restore_kind(
        self, conn: psycopg.Connection[Any], kind: Kind, live: _KindLive, h0: int
    ) -> int:
        folder = live.folder
        ids, ts, cols = read_columns(
            conn, kind, h0 * HOUR_MS - folder.rates.lookback_ms, _OPEN_END_MS
        )
        live.evicted_below = max(live.evicted_below, h0)
        hours: set[int] = set()
        if len(ts):
            n_hours = max(1, (int(ts.max()) + folder.rates.hold_ms) // HOUR_MS - h0 + 1)
            folded = folder.fold(folder.devices.lookup(ids), ts, cols, h0=h0, n_hours=n_hours)
            for i in range(n_hours):
                if folded.acc[i].any():
                    live.hours[h0 + i] = folded.acc[i].copy()
                    hours.add(h0 + i)
        if kind is Kind.HEATING:
            newest = conn.execute(
                "SELECT max(received_at) FROM complaints WHERE category = 'heating' "
                "AND received_at >= %s",
                (datetime.fromtimestamp(h0 * HOUR_MS / 1000, UTC),),
            ).fetchone()
            if newest is not None and newest[0] is not None:
                n = int(newest[0].timestamp() * 1000) // HOUR_MS - h0 + 1
                counts = complaint_counts(conn, self.areas, h0, n)
                for i in range(n):
                    if counts[i].any():
                        self._complaints[h0 + i] = counts[i].copy()
                        hours.add(h0 + i)
        if hours:
            rollups.replace_hours(
                conn, kind.value, [h * HOUR_MS for h in sorted(hours)], self.rows(kind, hours)
            )
        return len(hours)

    def save_state(self) -> int:
        """Save the detector state of every sensor that learnt something; return how many."""
        with self._lock:
            conn = self._connection()
            if conn is None:
                return 0
            saved = 0
            try:
                for live in self._kinds.values():
                    saved += live.state.save(conn, live.folder.devices.ids.tolist())
            except DB_ERRORS as err:
                self._db_failed(err, "save_state")
                return saved
            self.state_saved_at = time.monotonic()
        return saved

    def reload_devices(self, devices: Mapping[Kind, DeviceIndex]) -> None:
        """Take a new registry (devices added, retired or moved) without losing sensor state."""
        with self._lock:
            for kind, index in devices.items():
                live = self._kinds.get(kind)
                if live is None:
                    continue
                old_pos = live.folder.devices.lookup(index.ids)
                live.state.reindex(old_pos)
                live.folder.reindex(index)
            self.devices = {**self.devices, **devices}

    def reload_registry(self) -> int:
        """Re-read the devices of this consumer's areas from its connection; return how many.

        Devices added, retired or moved in the registry since the start take part from the next
        batch on; sensor state of the devices kept is carried over (``reload_devices``). While
        the database is unreachable the registry is kept (returns 0). Nothing is read while the
        registry's change counter has not moved (cityops.registry_version).
        """
        with self._lock:  # the connection is shared with flush
            conn = self._connection()
            if conn is None:
                return 0
            try:
                version = registry_version.read(conn)
                if version is not None and version == self.registry_version:
                    return sum(len(live.folder.devices) for live in self._kinds.values())
                devices = {kind: load_devices(conn, kind, self.areas) for kind in self._kinds}
            except DB_ERRORS as err:
                self._db_failed(err, "reload_registry")
                return 0
        self.reload_devices(devices)
        self.registry_version = version
        self.registry_reloads += 1
        return sum(len(index) for index in devices.values())

    def late_readings(self) -> dict[Kind, int]:
        """Readings per kind that arrived after a newer one of the same device (re-opened hours)."""
        return {kind: live.late for kind, live in self._kinds.items()}

    def sensor_state(self, kind: Kind) -> SensorState:
        """The per-sensor online state of ``kind``."""
        return self._kinds[kind].state

    # --- the BatchConsumer side (memory only) -----------------------------------------------

    def on_batch(self, batch: CommittedBatch) -> None:
        """Fold one committed batch into memory; never raises (errors are logged and counted)."""
        try:
            with self._lock:
                for kind, kb in batch.readings.items():
                    if kind in self._kinds and len(kb):
                        batch.anomaly[kind] = self._fold(self._kinds[kind], kb)
                if batch.complaints:
                    self._count_complaints(batch.complaints)
                for change in batch.status_changes:
                    self._status(change)
                self.batches += 1
        except Exception:
            self.consumer_errors += 1
            log.exception("live_batch_failed", seq=batch.seq)

    def _fold(self, live: _KindLive, kb: KindBatch) -> AnomalyScores:
        dev = live.folder.devices.lookup(kb.device_ids, kb.positions)
        order = kernels.device_time_order(dev, kb.ts_ms, len(live.folder.devices))
        folded = live.folder.fold(dev, kb.ts_ms, kb.columns, order=order)
        field = STATE_FIELD[kb.kind]
        score, cause = live.state.update(
            dev,
            kb.ts_ms,
            kb.columns[field],
            order=order,
            slots=live.state.slots_of(kb.ts_ms, kb.columns),
        )
        scores = AnomalyScores(field=field, score=score, cause=cause)
        if folded.late.any():
            hold = live.folder.rates.lookback_ms
            for t in kb.ts_ms[folded.late]:
                first = int(t) // HOUR_MS
                live.reopened.update(range(first, (int(t) + hold) // HOUR_MS + 1))
            live.late += int(folded.late.sum())
        acc = folded.acc
        for hi in range(acc.shape[0]):
            block = acc[hi]
            if not block.any():
                continue
            hour = folded.h0 + hi
            if hour < live.evicted_below and hour not in live.hours:
                # A long-silent device reported into an hour no longer in memory: its stored
                # rows are complete sums, so recompute the hour rather than add to nothing.
                live.reopened.add(hour)
                continue
            held = live.hours.get(hour)
            if held is None:
                live.hours[hour] = block.copy()
            else:
                held += block
            live.dirty.add(hour)
        return scores

    def _status(self, change: StatusChange) -> None:
        live = self._kinds.get(change.kind)
        if live is None:
            return
        d = int(live.folder.devices.lookup([change.device_id])[0])
        if d >= 0:
            live.state.report_status(d, change.online, int(change.ts.timestamp() * 1000))

    def _count_complaints(self, records: Any) -> None:
        ts, area = complaints.heating_complaints(records, self.areas)
        heating = self._kinds.get(Kind.HEATING)
        for t, a in zip(ts, area, strict=True):
            if a < 0:
                continue
            hour = int(t) // HOUR_MS
            if (
                heating is not None
                and hour < heating.evicted_below
                and hour not in self._complaints
                and hour not in heating.hours
            ):
                # an hour not in memory (before the restored ones): its stored count is the
                # truth, so recompute it rather than write this complaint alone
                heating.reopened.add(hour)
                continue
            counts = self._complaints.setdefault(hour, np.zeros(len(self.areas), dtype=np.int64))
            counts[a] += 1
            if heating is not None:
                heating.dirty.add(hour)

    # --- flushing: database and MQTT --------------------------------------------------------

    def rows(self, kind: Kind, hours: set[int] | None = None) -> list[RateRow]:
        """The rows of the in-memory hours of ``kind`` (all, or the given ones)."""
        live = self._kinds[kind]
        out: list[RateRow] = []
        for hour in sorted(live.hours if hours is None else hours):
            block = live.hours.get(hour)
            if block is None:
                block = np.zeros((len(self.areas), live.folder.slots), dtype=np.int64)
            sched = live.folder.schedule(hour * HOUR_MS, (hour + 1) * HOUR_MS)
            out.extend(
                live.folder.rates.rows(block[None], live.folder.devices, self.areas, sched, hour)
            )
            if kind is Kind.HEATING:
                counts = self._complaints.get(hour, np.zeros(len(self.areas), dtype=np.int64))
                out.extend(complaints.density_rows(counts[None], hour, self.areas, self._calendar))
        return out

    def flush(self) -> int:
        """Recompute re-opened hours, upsert touched hours, publish snapshots; rows written.

        A database failure never raises: the hours not written are kept for a recompute from
        the database, the connection is reopened with back-off, and the snapshots are
        published from memory all the same.
        """
        with self._lock:
            written = self._flush_db()
            if self.publish is not None:
                try:
                    self._publish_snapshots(self.publish)
                except Exception:
                    self.consumer_errors += 1
                    log.exception("live_publish_failed")
        if time.monotonic() - self.state_saved_at >= self.settings.stream.anomaly_save_s:
            self.save_state()
        return written

    def _flush_db(self) -> int:
        """Under the lock: catch up, upsert, record progress; returns rows written."""
        if self.conn is None and self.connect is None:  # no database (benchmarks, unit tests)
            for live in self._kinds.values():
                live.dirty.clear()
                live.reopened.clear()
                self._evict(live)
            return 0
        conn = self._connection()
        if conn is None:
            self._keep_for_recompute()
            for live in self._kinds.values():
                self._evict(live)
            return 0
        try:
            written = self._write_all(conn)
        except DB_ERRORS as err:
            self._db_failed(err, "flush")
            return 0
        self.backoff.succeeded()
        self.db_ok = True
        if not self.pending():
            self.last_clean = time.monotonic()
        return written

    def _write_all(self, conn: psycopg.Connection[Any]) -> int:
        """Under the lock: catch up, upsert the touched hours, record progress."""
        written = 0
        if self._suspect is not None and self.batches > self._suspect[0]:
            # a batch arrived after an idle-time snapshot: it may have been committed before
            # it (and counted twice), so those hours go through the catch-up point once more
            for kind, hours in self._suspect[1].items():
                self._kinds[kind].reopened |= hours
            self._suspect = None
        if self.fenced and self._work is None and self.batches == self._batches_seen:
            # nothing arrived since the last flush: do not wait for a batch to recompute
            self._work = self._snapshot()
            if self._work is not None:
                self._suspect = (self.batches, {k: set(h) for k, h in self._work.pending.items()})
        self._batches_seen = self.batches
        work, self._work = self._work, None
        if work is not None and self._read is not None:  # snapshot taken by catch_up_point
            try:
                written += self._catch_up(self._read, conn, work)
            finally:
                if not self._read.closed:
                    self._read.rollback()
        if not self.fenced:
            # no batch can be in flight (direct use, or ingest has stopped)
            work = self._take_work()
            if work is not None:
                written += self._catch_up(conn, conn, work)
        for kind, live in self._kinds.items():
            ready = live.dirty - live.reopened
            if ready:
                written += rollups.upsert(conn, self.rows(kind, ready))
                live.dirty -= ready
            self._evict(live)
        if self.consumer is not None:
            heartbeat.write(
                conn, self.consumer, lag_s=self.lag_s(), resume_from=self._resume_from()
            )
        return written

    def _resume_from(self) -> datetime | None:
        """Where a restart rebuilds from: the hour before the newest one held (None: nothing).

        Only moved on when nothing is waiting for the database, so after a failure a restart
        still rebuilds every hour the failure left unwritten.
        """
        if self.pending():
            return None
        newest = [max(live.hours) for live in self._kinds.values() if live.hours]
        if not newest:
            return None
        return datetime.fromtimestamp((max(newest) - 1) * HOUR_MS / 1000, UTC)

    def pending(self) -> bool:
        """Hours are waiting to be written or recomputed."""
        return self._work is not None or any(
            live.dirty or live.reopened for live in self._kinds.values()
        )

    def lag_s(self) -> float:
        """Seconds since the last flush that left nothing waiting (and reached the database).

        0 while nothing waits and the database answered last time; during an outage it grows
        from the last successful flush, whether or not batches arrived meanwhile.
        """
        if not self.pending() and (self.db_ok or (self.conn is None and self.connect is None)):
            return 0.0
        return max(0.0, time.monotonic() - self.last_clean)

    def readiness(self) -> dict[str, Any]:
        """For ingest's /readyz: database reachable and the rates not lagging."""
        lag = self.lag_s()
        return {
            "ok": lag <= self.settings.stream.max_lag_s,
            "lag_s": round(lag, 3),
            "database": self.db_ok,
            "flush_failures": self.flush_failures,
        }

    # --- the database connection and recomputes ---------------------------------------------

    def _connection(self) -> psycopg.Connection[Any] | None:
        """Under the lock: the open connection, reopened when due (None: none at the moment)."""
        conn = self.conn
        if conn is not None and not conn.closed and not conn.broken:
            if self.fenced and not self._open_read():
                return None
            return conn
        if self.connect is None or not self.backoff.due():
            return None
        try:
            self.conn = self.connect()
        except DB_ERRORS as err:
            self._db_failed(err, "connect")
            return None
        log.info("live_db_reconnected", failures=self.backoff.failures)
        if self.fenced and not self._open_read():
            return None
        return self.conn

    def _open_read(self) -> bool:
        """The snapshot connection of ``catch_up_point`` is open (reopened when needed)."""
        read = self._read
        if read is not None and not read.closed and not read.broken:
            return True
        if self.connect is None:
            return False
        try:
            read = self.connect()
            read.autocommit = False
            read.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            read.read_only = True
        except DB_ERRORS as err:
            self._db_failed(err, "connect")
            return False
        self._read = read
        return True

    def _db_failed(self, err: Exception, during: str) -> None:
        """Under the lock: drop the connections, keep every unwritten hour, back off."""
        self.db_ok = False
        self.flush_failures += 1
        wait = self.backoff.failed()
        for conn in (self.conn, self._read):
            if conn is not None and self.connect is not None:
                with contextlib.suppress(Exception):  # closing a broken connection
                    conn.close()
        if self.connect is not None:
            self.conn = None
            self._read = None
        if self._work is not None:
            for kind, hours in self._work.pending.items():
                self._kinds[kind].reopened |= hours
            self._work = None
        self._keep_for_recompute()
        log.warning("live_db_failed", during=during, error=str(err).strip(), retry_in_s=wait)

    def _keep_for_recompute(self) -> None:
        """Hours not written are recomputed from the stored readings once the database is back."""
        for live in self._kinds.values():
            live.reopened |= live.dirty
            live.dirty.clear()

    def _take_work(self) -> _Work | None:
        """Under the lock: the re-opened hours and what memory holds of them now."""
        pending = {kind: set(live.reopened) for kind, live in self._kinds.items() if live.reopened}
        if not pending:
            return None
        work = _Work(pending=pending)
        for kind, hours in pending.items():
            live = self._kinds[kind]
            work.base[kind] = {h: live.hours[h].copy() for h in hours if h in live.hours}
            live.reopened.clear()
        for h in pending.get(Kind.HEATING, ()):
            if h in self._complaints:
                work.complaints[h] = self._complaints[h].copy()
        return work

    def catch_up_point(self) -> _CatchUpPoint:
        """The consumer to place right after this one in ingest's consumers.

        Between two batches every committed batch has been folded, so a recompute's database
        snapshot taken there counts each batch once (stored, or folded after it). With it in
        place, recomputes wait for the next batch; without it (direct use, tests) ``flush``
        recomputes at once.
        """
        self.fenced = True
        return _CatchUpPoint(self)

    def take_snapshot(self) -> None:
        """Start the snapshot of a pending recompute (from ``catch_up_point``; never raises)."""
        if self._work is not None or not any(live.reopened for live in self._kinds.values()):
            return
        with self._lock:
            if self._work is None:
                self._work = self._snapshot()

    def _snapshot(self) -> _Work | None:
        """Under the lock: open the recompute's snapshot on the read connection, take the work."""
        read = self._read
        if not any(live.reopened for live in self._kinds.values()):
            return None
        if read is None or read.closed or read.broken:
            return None
        try:
            read.execute("SELECT 1")  # REPEATABLE READ: the snapshot of the whole recompute
        except Exception as err:
            log.warning("live_snapshot_failed", error=str(err).strip())
            return None  # the flush thread reconnects
        work = self._take_work()
        if work is None:
            read.rollback()
        return work

    def _catch_up(
        self, read: psycopg.Connection[Any], conn: psycopg.Connection[Any], work: _Work
    ) -> int:
        """Recompute ``work`` from ``read`` (its snapshot), add what was folded since, write."""
        left = {kind: set(hours) for kind, hours in work.pending.items()}
        written = 0
        try:
            for kind, hours in work.pending.items():
                live = self._kinds[kind]
                worker = Recomputer(self.settings, kind, self.areas, live.folder.devices)
                base = work.base.get(kind, {})
                for lo, hi in _runs(sorted(hours)):
                    _, acc, _ = worker.compute(read, lo * HOUR_MS, hi * HOUR_MS)
                    for i, hour in enumerate(range(lo, hi)):
                        fresh = acc[i].copy()
                        held, then = live.hours.get(hour), base.get(hour)
                        if held is not None:
                            fresh += held
                        if then is not None:
                            fresh -= then
                        if held is not None or fresh.any():
                            live.hours[hour] = fresh
                    if kind is Kind.HEATING:
                        self._catch_up_complaints(read, work, lo, hi)
                    live.dirty.update(range(lo, hi))
                    left[kind].difference_update(range(lo, hi))
                    self.recomputed_hours += hi - lo
                    log.info("live_hours_recomputed", kind=kind.value, hours=hi - lo)
            for kind, hours in work.pending.items():
                live = self._kinds[kind]
                for lo, hi in _runs(sorted(hours)):
                    run = set(range(lo, hi))
                    written += rollups.replace_hours(
                        conn, kind.value, [h * HOUR_MS for h in range(lo, hi)], self.rows(kind, run)
                    )
                    live.dirty -= run
        except BaseException:
            for kind, hours in left.items():
                self._kinds[kind].reopened |= hours
            raise
        return written

    def _catch_up_complaints(
        self, read: psycopg.Connection[Any], work: _Work, lo: int, hi: int
    ) -> None:
        counts = complaint_counts(read, self.areas, lo, hi - lo)
        for i, hour in enumerate(range(lo, hi)):
            fresh = counts[i].copy()
            held, then = self._complaints.get(hour), work.complaints.get(hour)
            if held is not None:
                fresh += held
            if then is not None:
                fresh -= then
            if held is not None or fresh.any():
                self._complaints[hour] = fresh

    def _evict(self, live: _KindLive) -> None:
        if not live.hours:
            return
        newest = max(live.hours)
        floor = newest - self.keep_hours
        for hour in [h for h in live.hours if h < floor]:
            del live.hours[hour]
        live.evicted_below = max(live.evicted_below, floor)

    def snapshot(self, area: str) -> dict[str, Any]:
        """The live snapshot of one area: the last complete hour's rates and sensor counts.

        Not the hour in progress: its rows carry the whole hour's scheduled denominator but
        only the minutes so far in the numerator, so its rates read low until the hour ends.
        """
        self.areas.position(area)  # an unknown area raises here, as it always did
        return self.snapshots()[area]

    def snapshots(self) -> dict[str, dict[str, Any]]:
        """Every area's snapshot (``snapshot``), computed in one pass over the sensors.

        Once a second for every area: each sensor state is read once and counted into its area,
        instead of once per area (which grew with areas x devices: at a city's million devices
        and hundreds of areas, seconds per second).
        """
        now_ms = int(self.clock() * 1000)
        hour = now_ms // HOUR_MS - 1
        n_areas = len(self.areas)
        rates: list[dict[str, float | None]] = [{} for _ in range(n_areas)]
        sensors: list[dict[str, dict[str, int]]] = [{} for _ in range(n_areas)]
        position = {code: i for i, code in enumerate(self.areas.codes)}
        for kind, live in self._kinds.items():
            block = live.hours.get(hour)
            if block is not None:
                sched = live.folder.schedule(hour * HOUR_MS, (hour + 1) * HOUR_MS)
                for r in live.folder.rates.rows(
                    block[None], live.folder.devices, self.areas, sched, hour
                ):
                    rate = r.numerator / r.denominator if r.denominator else None
                    rates[position[r.area_code]][r.metric] = rate
            devices = live.folder.devices
            active = devices.active
            offline = live.state.offline(now_ms, active) & active
            flat = live.state.flatlined() & active

            def per_area(mask: np.ndarray, area: np.ndarray = devices.area) -> list[int]:
                return np.bincount(area[mask], minlength=n_areas).tolist()  # type: ignore[no-any-return]

            in_service, n_offline, n_flat = per_area(active), per_area(offline), per_area(flat)
            for a in range(n_areas):
                sensors[a][kind.value] = {
                    "in_service": in_service[a],
                    "offline": n_offline[a],
                    "flatlined": n_flat[a],
                }
        return {
            code: {
                "area": code,
                "ts": now_ms,
                "hour": hour * HOUR_MS,
                "rates": rates[a],
                "sensors": sensors[a],
            }
            for a, code in enumerate(self.areas.codes)
        }

    def _publish_snapshots(self, publish: Publish) -> None:
        for area, snap in self.snapshots().items():
            publish(LIVE_TOPIC.format(area=area), orjson.dumps(snap))

    # --- background flushing ----------------------------------------------------------------

    def start(self) -> None:
        """Flush every ``publish_interval_s`` in a daemon thread until ``stop``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="stream-live", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self.settings.stream.publish_interval_s
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:
                self.consumer_errors += 1
                log.exception("live_flush_failed")

    def stop(self) -> None:
        """Stop the thread and flush once more (ingest has stopped: recomputes run at once)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.fenced = False
        self.backoff.succeeded()  # one last attempt now, whatever the back-off said
        self.flush()
        self.save_state()
        if self.consumer is None:
            return
        with self._lock:
            conn = self._connection()
            if conn is None:
                return
            try:
                heartbeat.write(
                    conn,
                    self.consumer,
                    lag_s=self.lag_s(),
                    resume_from=self._resume_from(),
                    stopped=True,
                )
            except DB_ERRORS as err:
                self._db_failed(err, "stop")

    def close(self) -> None:
        """Close the connections this consumer opened itself."""
        for conn in (self.conn, self._read):
            if conn is not None and not conn.closed:
                conn.close()


def _runs(hours: list[int]) -> list[tuple[int, int]]:
    """Sorted hours as contiguous [lo, hi) runs."""
    out: list[tuple[int, int]] = []
    for h in hours:
        if out and out[-1][1] == h:
            out[-1] = (out[-1][0], h + 1)
        else:
            out.append((h, h + 1))
    return out


def mqtt_publisher(settings: Settings) -> tuple[Publish, Callable[[], None]]:
    """A paho-mqtt publisher for the live topics and a function that disconnects it."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{settings.mqtt.client_id}-stream-live"
    )
    if settings.mqtt.username:
        password = settings.mqtt.password.get_secret_value() if settings.mqtt.password else None
        client.username_pw_set(settings.mqtt.username, password)
    if settings.mqtt.tls:
        client.tls_set()
    client.connect(settings.mqtt.host, settings.mqtt.port, settings.mqtt.keepalive_s)
    client.loop_start()

    def publish(topic: str, payload: bytes) -> None:
        client.publish(topic, payload, qos=0, retain=True)

    def close() -> None:
        client.loop_stop()
        client.disconnect()

    return publish, close


def start_live(
    settings: Settings, *, publish_live: bool = True
) -> tuple[LiveRates, Callable[[], None]]:
    """For the composition root: a running live consumer and the function that stops it.

    Opens its own autocommit connection (registry, rates upserts, recomputes; reopened with
    back-off after a failure) and, unless ``publish_live`` is false, its own MQTT client for
    the live snapshots. The hours in progress are restored from the stored readings. Pass the
    consumer and then ``live.catch_up_point()`` to ingest's consumers; call the stop function
    after ingest stopped (it flushes once more).
    """
    from cityops.db import pool

    def connect() -> psycopg.Connection[Any]:
        return pool.connect(settings.db, autocommit=True)

    conn = connect()
    publish: Publish | None = None
    close_mqtt: Callable[[], None] = lambda: None  # noqa: E731
    try:
        if publish_live:
            publish, close_mqtt = mqtt_publisher(settings)
        live = LiveRates.from_db(
            settings,
            conn,
            publish=publish,
            connect=connect,
            consumer=heartbeat.consumer_name("stream", settings.ingest),
        )
    except BaseException:
        close_mqtt()
        conn.close()
        raise
    live.start()

    def stop() -> None:
        try:
            live.stop()
        finally:
            close_mqtt()
            live.close()

    return live, stop

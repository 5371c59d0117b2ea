"""Live mode: the ingest consumer that keeps rates and sensor state current from each batch.

``LiveRates.on_batch`` runs in the ingest process after each commit and only touches memory: it
folds the batch into the per-kind kernel state and the in-memory sums of the hours the readings
touch, updates the per-sensor state, counts heating complaints and notes late readings. ``flush``
(called about once a second by ``start``'s thread, or directly) recomputes the hours late
readings re-opened from the database, upserts every touched hour to ``rates_hourly`` and
publishes one snapshot per area on ``cityops/v1/live/{area}``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import psycopg
import structlog

from cityops.batch import AnomalyScores, CommittedBatch, KindBatch, StatusChange
from cityops.catalog import Kind
from cityops.partition import area_filter
from cityops.schedule import HeatingCalendar
from cityops.settings import Settings
from stream import complaints, kernels, rollups
from stream.engine import HOUR_MS, Folder
from stream.rates import RateRow, kind_rates
from stream.recompute import Recomputer
from stream.registry import AreaIndex, DeviceIndex, load_areas, load_devices
from stream.state import STATE_FIELD, SensorState

log = structlog.get_logger(__name__)

LIVE_TOPIC = "cityops/v1/live/{area}"
Publish = Callable[[str, bytes], None]


@dataclass(kw_only=True)
class _KindLive:
    folder: Folder
    state: SensorState
    hours: dict[int, np.ndarray]  # epoch hour -> (n_areas, slots) int64
    dirty: set[int]
    reopened: set[int]
    late: int = 0
    evicted_below: int = -(2**62)  # hours before this were dropped from memory


class LiveRates:
    """A ``cityops.batch.BatchConsumer`` that keeps rates_hourly and live snapshots current."""

    def __init__(
        self,
        settings: Settings,
        areas: AreaIndex,
        devices: Mapping[Kind, DeviceIndex],
        *,
        conn: psycopg.Connection[Any] | None = None,
        publish: Publish | None = None,
        clock: Callable[[], float] = time.time,
        keep_hours: int = 48,
    ) -> None:
        self.settings = settings
        self.areas = areas
        self.devices = devices
        self.conn = conn
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

    @classmethod
    def from_db(
        cls,
        settings: Settings,
        conn: psycopg.Connection[Any],
        *,
        publish: Publish | None = None,
    ) -> LiveRates:
        """A consumer for every kind with the registry loaded from ``conn`` (autocommit).

        The connection is then used by ``flush`` only (one thread at a time, under the lock).
        A partitioned ingest worker (``ingest.partitions`` > 1) keeps only its partition's
        areas, so it never writes rates for areas whose readings another worker receives.
        """
        areas = load_areas(conn, area_filter(settings.ingest))
        devices = {kind: load_devices(conn, kind, areas) for kind in Kind}
        live = cls(settings, areas, devices, conn=conn, publish=publish)
        live.restore_state()
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

    def save_state(self) -> int:
        """Save the detector state of every sensor that learnt something; return how many."""
        if self.conn is None:
            return 0
        saved = 0
        with self._lock:
            for live in self._kinds.values():
                saved += live.state.save(self.conn, live.folder.devices.ids.tolist())
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
        batch on; sensor state of the devices kept is carried over (``reload_devices``).
        """
        if self.conn is None:
            return 0
        with self._lock:  # the connection is shared with flush
            devices = {kind: load_devices(self.conn, kind, self.areas) for kind in self._kinds}
        self.reload_devices(devices)
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
        dev = live.folder.devices.lookup(kb.device_ids)
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
        for t, a in zip(ts, area, strict=True):
            if a < 0:
                continue
            hour = int(t) // HOUR_MS
            counts = self._complaints.setdefault(hour, np.zeros(len(self.areas), dtype=np.int64))
            counts[a] += 1
            if Kind.HEATING in self._kinds:
                self._kinds[Kind.HEATING].dirty.add(hour)

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
        """Recompute re-opened hours, upsert touched hours, publish snapshots; rows written."""
        with self._lock:
            written = 0
            for kind, live in self._kinds.items():
                if live.reopened and self.conn is not None:
                    self._recompute_reopened(self.conn, kind, live)
                if live.dirty and self.conn is not None:
                    written += rollups.upsert(self.conn, self.rows(kind, live.dirty))
                live.dirty.clear()
                self._evict(live)
            if self.publish is not None:
                self._publish_snapshots(self.publish)
        if time.monotonic() - self.state_saved_at >= self.settings.stream.anomaly_save_s:
            self.save_state()
        return written

    def _recompute_reopened(
        self, conn: psycopg.Connection[Any], kind: Kind, live: _KindLive
    ) -> None:
        worker = Recomputer(self.settings, kind, self.areas, live.folder.devices)
        for lo, hi in _runs(sorted(live.reopened)):
            rows, acc, _ = worker.compute(conn, lo * HOUR_MS, hi * HOUR_MS)
            # The database holds every committed reading: its sums replace the in-memory ones.
            for i, hour in enumerate(range(lo, hi)):
                if hour in live.hours or acc[i].any():
                    live.hours[hour] = acc[i].copy()
            rollups.replace_hours(conn, kind.value, [h * HOUR_MS for h in range(lo, hi)], rows)
            live.dirty.difference_update(range(lo, hi))
            self.recomputed_hours += hi - lo
            log.info("live_hours_recomputed", kind=kind.value, hours=hi - lo, rows=len(rows))
        live.reopened.clear()

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
        a = self.areas.position(area)
        now_ms = int(self.clock() * 1000)
        hour = now_ms // HOUR_MS - 1
        rates: dict[str, float | None] = {}
        sensors: dict[str, dict[str, int]] = {}
        for kind, live in self._kinds.items():
            block = live.hours.get(hour)
            if block is not None:
                sched = live.folder.schedule(hour * HOUR_MS, (hour + 1) * HOUR_MS)
                for r in live.folder.rates.rows(
                    block[None], live.folder.devices, self.areas, sched, hour,
                    area_mask=np.arange(len(self.areas)) == a,
                ):  # fmt: skip
                    rates[r.metric] = r.numerator / r.denominator if r.denominator else None
            devices = live.folder.devices
            in_area = (devices.area == a) & devices.active
            offline = live.state.offline(now_ms, devices.active)
            sensors[kind.value] = {
                "in_service": int(in_area.sum()),
                "offline": int((offline & in_area).sum()),
                "flatlined": int((live.state.flatlined() & in_area).sum()),
            }
        return {
            "area": area,
            "ts": now_ms,
            "hour": hour * HOUR_MS,
            "rates": rates,
            "sensors": sensors,
        }

    def _publish_snapshots(self, publish: Publish) -> None:
        for area in self.areas.codes:
            payload = orjson.dumps(self.snapshot(area))
            publish(LIVE_TOPIC.format(area=area), payload)

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
        """Stop the thread and flush once more."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.flush()
        self.save_state()


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

    Opens its own autocommit connection (registry, rates upserts, recomputes) and, unless
    ``publish_live`` is false, its own MQTT client for the live snapshots. Pass the consumer to
    ingest's consumers; call the stop function after ingest stopped (it flushes once more).
    """
    from cityops.db import pool

    conn = pool.connect(settings.db, autocommit=True)
    publish: Publish | None = None
    close_mqtt: Callable[[], None] = lambda: None  # noqa: E731
    if publish_live:
        publish, close_mqtt = mqtt_publisher(settings)
    live = LiveRates.from_db(settings, conn, publish=publish)
    live.start()

    def stop() -> None:
        try:
            live.stop()
        finally:
            close_mqtt()
            conn.close()

    return live, stop

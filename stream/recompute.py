"""Batch mode: recompute ``rates_hourly`` for a range of hours from the stored readings.

For each kind and each chunk (a UTC day by default) the readings from ``lookback_ms`` before the
chunk to its end are read in the ``cityops.batch`` column encoding, folded by the same kernel the
live consumer uses (from empty state), and the chunk's rows replace whatever the table held for
that kind, chunk and area. Running it twice gives the same table; late readings are picked up by
running it again over their hours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from cityops import catalog
from cityops import registry as registry_history
from cityops.batch import column_dtype
from cityops.catalog import FieldType, Kind
from cityops.schedule import HeatingCalendar
from cityops.settings import Settings
from stream import complaints, rollups
from stream.engine import HOUR_MS, Folder
from stream.rates import KindRates, RateRow, kind_rates
from stream.registry import AreaIndex, DeviceIndex, as_of, load_areas, load_devices

DEFAULT_CHUNK_HOURS = 24

COMPLAINTS_SQL = """
SELECT received_at, area_code FROM complaints
WHERE category = 'heating' AND received_at >= %s AND received_at < %s
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class ChunkDone:
    """Progress report of one recomputed chunk."""

    kind: Kind
    start_ms: int
    end_ms: int
    readings: int
    rows: int


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def read_columns(
    conn: psycopg.Connection[Any],
    kind: Kind,
    start_ms: int,
    end_ms: int,
    device_ids: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Readings of ``kind`` in [start, end) as (device ids, epoch ms, catalog-encoded columns)."""
    spec = catalog.KINDS[kind]
    fields = [f for f in spec.readings if f.type is not FieldType.STR]
    query = sql.SQL(
        "SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint, {cols} FROM {table} "
        "WHERE ts >= %s AND ts < %s {extra}"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(f.name) for f in fields),
        table=sql.Identifier(spec.table),
        extra=sql.SQL("AND device_id = ANY(%s)" if device_ids is not None else ""),
    )
    params: list[Any] = [_ts(start_ms), _ts(end_ms)]
    if device_ids is not None:
        params.append(list(device_ids))
    rows = conn.execute(query, params).fetchall()
    ids = np.array([r[0] for r in rows], dtype=object)
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    columns: dict[str, np.ndarray] = {}
    for j, f in enumerate(fields, start=2):
        raw = [r[j] for r in rows]
        if f.type is FieldType.ENUM:
            codes = pd.Categorical(raw, categories=list(f.allowed or ())).codes
            columns[f.name] = np.asarray(codes, dtype=np.int16)
        elif f.type is FieldType.BOOL:
            columns[f.name] = np.array([-1 if v is None else int(v) for v in raw], dtype=np.int8)
        elif f.type is FieldType.FLOAT:
            columns[f.name] = np.array([np.nan if v is None else v for v in raw], dtype=np.float64)
        else:
            columns[f.name] = np.array(raw, dtype=column_dtype(f))
    return ids, ts, columns


def complaint_counts(
    conn: psycopg.Connection[Any], areas: AreaIndex, h0: int, n_hours: int
) -> np.ndarray:
    """Stored heating complaints per (hour, area) of the hours [h0, h0 + n_hours)."""
    found = conn.execute(
        COMPLAINTS_SQL, (_ts(h0 * HOUR_MS), _ts((h0 + n_hours) * HOUR_MS))
    ).fetchall()
    pos = {c: i for i, c in enumerate(areas.codes)}
    ts = np.array([int(r[0].timestamp() * 1000) for r in found], dtype=np.int64)
    area = np.array([pos.get(r[1], -1) for r in found], dtype=np.int64)
    counts = np.zeros((n_hours, len(areas)), dtype=np.int64)
    complaints.count_by_hour_area(ts, area, h0, counts)
    return counts


def _chunks(start_ms: int, end_ms: int, hours: int) -> Iterable[tuple[int, int]]:
    lo = start_ms
    while lo < end_ms:
        hi = min(end_ms, (lo // HOUR_MS + hours) * HOUR_MS)
        yield lo, hi
        lo = hi


class Recomputer:
    """Recomputes hours of one kind from the database (registry loaded once)."""

    def __init__(
        self,
        settings: Settings,
        kind: Kind,
        areas: AreaIndex,
        devices: DeviceIndex,
        area: str | None = None,
        history: dict[str, registry_history.Timeline] | None = None,
    ) -> None:
        self.settings = settings
        self.history = history
        self._cached: tuple[date, DeviceIndex] | None = None
        self._changes = sorted(
            {e.on for t in (history or {}).values() for e in t.events}
            | {t.install_date for t in (history or {}).values() if t.install_date is not None}
        )
        self._zone = ZoneInfo(settings.timezone)
        self.kind = kind
        self.rates: KindRates = kind_rates(kind, settings)
        self.areas = areas
        self.devices = devices
        self.area = area
        self._area_mask: np.ndarray | None = None
        self._device_ids: list[str] | None = None
        if area is not None:
            pos = areas.position(area)
            self._area_mask = np.arange(len(areas)) == pos
            self._device_ids = [str(d) for d in devices.ids[devices.area == pos]]
        self._calendar = HeatingCalendar(settings.schedule, settings.timezone)

    def compute(
        self, conn: psycopg.Connection[Any], start_ms: int, end_ms: int
    ) -> tuple[list[RateRow], np.ndarray, int]:
        """Rows, accumulator and reading count of the hours [start, end) (hour-aligned)."""
        h0 = start_ms // HOUR_MS
        n_hours = (end_ms - start_ms) // HOUR_MS
        devices = self.devices_on(self._local_day(start_ms))
        folder = Folder(self.rates, devices, self.areas)
        ids, ts, cols = read_columns(
            conn, self.kind, start_ms - self.rates.lookback_ms, end_ms, self._device_ids
        )
        folded = folder.fold(devices.lookup(ids), ts, cols, h0=h0, n_hours=n_hours)
        sched = folder.schedule(start_ms, end_ms)
        rows = self.rates.rows(
            folded.acc, devices, self.areas, sched, h0, area_mask=self._area_mask
        )
        if self.kind is Kind.HEATING:
            rows.extend(self._complaint_rows(conn, h0, n_hours))
        return rows, folded.acc, len(ts)

    def _local_day(self, ms: int) -> date:
        return datetime.fromtimestamp(ms / 1000, self._zone).date()

    def devices_on(self, day: date) -> DeviceIndex:
        """The devices as registered on ``day`` (history), or as today without history."""
        if self.history is None:
            return self.devices
        if self._cached is not None:
            cached_day, index = self._cached
            lo, hi = min(cached_day, day), max(cached_day, day)
            if not any(lo < d <= hi for d in self._changes):
                return index  # nothing changed in between
        present = {
            t.device_id: t.area_on(day) for t in self.history.values() if t.in_service_on(day)
        }
        index = as_of(self.devices, self.areas, present)
        self._cached = (day, index)
        return index

    def _day_split(self, lo: int, hi: int) -> Iterable[tuple[int, int]]:
        """[lo, hi) cut at local midnights (hour-aligned), so each piece has one registry day."""
        if self.history is None:
            yield lo, hi
            return
        while lo < hi:
            day = self._local_day(lo) + timedelta(days=1)
            midnight = datetime(day.year, day.month, day.day, tzinfo=self._zone)
            cut = min(hi, int(midnight.timestamp() * 1000) // HOUR_MS * HOUR_MS)
            if cut <= lo:
                cut = min(hi, lo + HOUR_MS)
            yield lo, cut
            lo = cut

    def complaint_counts(self, conn: psycopg.Connection[Any], h0: int, n_hours: int) -> np.ndarray:
        """Stored heating complaints per (hour, area) of the hours [h0, h0 + n_hours)."""
        return complaint_counts(conn, self.areas, h0, n_hours)

    def _complaint_rows(
        self, conn: psycopg.Connection[Any], h0: int, n_hours: int
    ) -> list[RateRow]:
        counts = self.complaint_counts(conn, h0, n_hours)
        rows = complaints.density_rows(counts, h0, self.areas, self._calendar)
        if self.area is not None:
            rows = [r for r in rows if r.area_code == self.area]
        return rows

    def run(
        self,
        conn: psycopg.Connection[Any],
        start_ms: int,
        end_ms: int,
        *,
        chunk_hours: int = DEFAULT_CHUNK_HOURS,
        progress: Callable[[ChunkDone], None] | None = None,
    ) -> int:
        """Recompute and replace [start, end) chunk by chunk; returns the rows written."""
        written = 0
        for lo, hi in _chunks(start_ms, end_ms, chunk_hours):
            rows = []
            n = 0
            for a, b in self._day_split(lo, hi):
                part, _, m = self.compute(conn, a, b)
                rows.extend(part)
                n += m
            written += rollups.replace_range(conn, self.kind.value, lo, hi, rows, self.area)
            if progress is not None:
                progress(
                    ChunkDone(kind=self.kind, start_ms=lo, end_ms=hi, readings=n, rows=len(rows))
                )
        return written


def floor_hour(ts: datetime) -> int:
    """Epoch ms of the UTC hour containing ``ts``."""
    return int(ts.timestamp() * 1000) // HOUR_MS * HOUR_MS


def ceil_hour(ts: datetime) -> int:
    """Epoch ms of the first UTC hour boundary at or after ``ts``."""
    ms = int(ts.timestamp() * 1000)
    return -(-ms // HOUR_MS) * HOUR_MS


def recompute(
    conn: psycopg.Connection[Any],
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    kinds: Sequence[Kind] = tuple(Kind),
    area: str | None = None,
    chunk_hours: int = DEFAULT_CHUNK_HOURS,
    progress: Callable[[ChunkDone], None] | None = None,
) -> int:
    """Recompute every hour overlapping [start, end) for ``kinds``; returns rows written."""
    start_ms, end_ms = floor_hour(start), ceil_hour(end)
    areas = load_areas(conn)
    if area is not None and area not in areas.codes:
        from cityops.errors import ValidationError

        raise ValidationError(f"unknown area {area!r}; see `cityops areas list`", "area")
    total = 0
    for kind in kinds:
        devices = load_devices(conn, kind, areas)
        # Past hours count the devices registered then (install, commission, decommission, moves).
        history = registry_history.load_history(conn, kind.value)
        worker = Recomputer(settings, kind, areas, devices, area, history)
        total += worker.run(conn, start_ms, end_ms, chunk_hours=chunk_hours, progress=progress)
    return total

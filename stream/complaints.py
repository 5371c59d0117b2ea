"""Heating-complaint density: complaints in the season per 10,000 m² of heated area.

Stored per (area, hour) in season as numerator = heating complaints received in the hour and
denominator = heated area / 10,000 m² × (1 / hours of that season), so that summing a whole
season gives complaints ÷ (heated area / 10,000 m²) and any shorter period gives the same rate
pro-rated to a season (docs/rates.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numba import njit

from cityops.catalog import ComplaintCategory, Kind
from cityops.schedule import HeatingCalendar
from stream.rates import RateRow
from stream.registry import AreaIndex

HOUR_MS = 3_600_000
METRIC = "complaint_density"


@njit(cache=True, nogil=True)
def count_by_hour_area(ts, area, h0, acc):  # type: ignore[no-untyped-def]
    """Add one to ``acc[hour - h0, area]`` per event (events outside the hours or area < 0 skip)."""
    n_hours = acc.shape[0]
    for i in range(ts.shape[0]):
        h = ts[i] // HOUR_MS - h0
        if area[i] >= 0 and 0 <= h < n_hours:
            acc[h, area[i]] += 1


def count_reference(
    ts: Sequence[int], area: Sequence[int], h0: int, n_hours: int, n_areas: int
) -> np.ndarray:
    """Plain-Python ``count_by_hour_area``."""
    acc = np.zeros((n_hours, n_areas), dtype=np.int64)
    for t, a in zip(ts, area, strict=True):
        h = int(t) // HOUR_MS - h0
        if a >= 0 and 0 <= h < n_hours:
            acc[h, a] += 1
    return acc


def season_hours(calendar: HeatingCalendar, hour_ms: int) -> float:
    """Length in hours of the heating season containing the hour (0 outside the season)."""
    season = calendar.season_of(datetime.fromtimestamp(hour_ms / 1000, UTC))
    if season is None:
        return 0.0
    return (season[1] - season[0]).total_seconds() / 3600.0


def density_rows(
    counts: np.ndarray, h0: int, areas: AreaIndex, calendar: HeatingCalendar
) -> list[RateRow]:
    """Rows for every in-season hour and every area with a heated area."""
    out: list[RateRow] = []
    heated = areas.heated_area_m2
    for hi in range(counts.shape[0]):
        hour_ms = (h0 + hi) * HOUR_MS
        length = season_hours(calendar, hour_ms)
        if length == 0:
            continue
        for a in range(len(areas)):
            if not heated[a] > 0:
                continue
            out.append(
                RateRow(
                    area_code=areas.codes[a],
                    kind=Kind.HEATING.value,
                    metric=METRIC,
                    hour_ms=hour_ms,
                    numerator=float(counts[hi, a]),
                    denominator=float(heated[a]) / 10_000.0 / length,
                    samples=int(counts[hi, a]),
                )
            )
    return out


def heating_complaints(
    records: Sequence[Mapping[str, Any]], areas: AreaIndex
) -> tuple[np.ndarray, np.ndarray]:
    """(received epoch ms, area position) of the heating complaints among ``records``."""
    pos = {c: i for i, c in enumerate(areas.codes)}
    ts: list[int] = []
    area: list[int] = []
    for r in records:
        if r.get("category") != ComplaintCategory.HEATING.value:
            continue
        received = r.get("received_at")
        if not isinstance(received, datetime):
            continue
        ts.append(int(received.timestamp() * 1000))
        area.append(pos.get(str(r.get("area_code")), -1))
    return np.array(ts, dtype=np.int64), np.array(area, dtype=np.int64)

"""District weather: outdoor temperature with cold snaps, and rain events (invented, not measured).

The seasonal curve is fitted by eye to Beijing's climate normals (January mean about -3 °C, July
about 27 °C, a 5-6 °C day/night swing). Cold snaps and rain events are drawn per calendar day from
the seed, so any time window of the same seed sees the same weather.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np

_DAY_MS = 86_400_000
_LOCAL_OFFSET_MS = 8 * 3_600_000  # Beijing time has no daylight saving
_WEATHER_STREAM = 99


@dataclass(frozen=True, kw_only=True, slots=True)
class Episode:
    """A cold snap (``depth`` in °C below normal) or a rain event (``depth`` in mm/h)."""

    start_ms: int
    end_ms: int
    depth: float


class Weather:
    """Outdoor temperature and rain intensity at any instant, deterministic from the seed."""

    def __init__(self, seed: int) -> None:
        self._seed = seed

    @lru_cache(maxsize=1024)  # noqa: B019 -- one Weather per run; the cache dies with it
    def _day_events(self, day: int) -> tuple[tuple[Episode, ...], tuple[Episode, ...]]:
        rng = np.random.default_rng(np.random.SeedSequence([self._seed, _WEATHER_STREAM, day]))
        month = datetime.fromtimestamp(day * 86_400, UTC).month
        snaps: list[Episode] = []
        if month in (11, 12, 1, 2, 3) and rng.random() < 1 / 12:
            start = day * _DAY_MS + int(rng.integers(0, _DAY_MS))
            length = int(rng.uniform(2, 5) * _DAY_MS)
            snaps.append(Episode(start_ms=start, end_ms=start + length, depth=rng.uniform(5, 10)))
        rain_rate = {6: 1 / 3, 7: 1 / 3, 8: 1 / 3, 4: 1 / 10, 5: 1 / 8, 9: 1 / 8, 10: 1 / 12}
        rains: list[Episode] = []
        if rng.random() < rain_rate.get(month, 1 / 40):
            start = day * _DAY_MS + int(rng.integers(0, _DAY_MS))
            length = int(rng.uniform(1, 6) * 3_600_000)
            rains.append(
                Episode(start_ms=start, end_ms=start + length, depth=float(rng.exponential(8)))
            )
        return tuple(snaps), tuple(rains)

    def _episodes(self, t_ms: int, which: int, lookback_days: int) -> list[Episode]:
        day = t_ms // _DAY_MS
        out: list[Episode] = []
        for d in range(day - lookback_days, day + 1):
            out.extend(e for e in self._day_events(d)[which] if e.start_ms <= t_ms < e.end_ms)
        return out

    def outdoor_c(self, t_ms: int) -> float:
        """Outdoor air temperature in °C."""
        local = t_ms + _LOCAL_OFFSET_MS
        doy = (local % (365.25 * _DAY_MS)) / _DAY_MS
        seasonal = 12.0 - 15.0 * math.cos(2 * math.pi * (doy - 20) / 365.25)
        hour = (local % _DAY_MS) / 3_600_000
        diurnal = -5.5 * math.cos(2 * math.pi * (hour - 3) / 24)
        snap = 0.0
        for e in self._episodes(t_ms, 0, 6):
            phase = (t_ms - e.start_ms) / (e.end_ms - e.start_ms)
            snap -= e.depth * math.sin(math.pi * phase) ** 2
        return seasonal + diurnal + snap

    def rain_mm_h(self, t_ms: int) -> float:
        """Rain intensity in mm/h (0 when dry)."""
        return sum(e.depth for e in self._episodes(t_ms, 1, 1))

    def rain_events(self, start_ms: int, end_ms: int) -> list[Episode]:
        """Rain events overlapping [start, end)."""
        out: list[Episode] = []
        for d in range(start_ms // _DAY_MS - 1, end_ms // _DAY_MS + 1):
            out.extend(
                e for e in self._day_events(d)[1] if e.end_ms > start_ms and e.start_ms < end_ms
            )
        return out


def local_hour(t_ms: int) -> float:
    """Hour of the day in Beijing time (UTC+8), 0 <= h < 24."""
    return ((t_ms + _LOCAL_OFFSET_MS) % _DAY_MS) / 3_600_000

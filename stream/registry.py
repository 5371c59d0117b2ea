"""Dense indexes of areas and devices, loaded from the registry, for the kernels.

Kernels address per-device state and per-area sums by position; these indexes turn device ids and
area codes into those positions and carry the registry facts the rates need (area, schedule
class, in-service flag, heated area, public flag, charging site).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from cityops.catalog import DeviceStatus, Kind, ScheduleClass

SCHEDULE_GROUPS: tuple[ScheduleClass, ...] = (ScheduleClass.MAINS, ScheduleClass.SOLAR)

AREAS_SQL = """
SELECT code, district, lat, lon, land_area_km2, population, heated_area_m2
FROM areas ORDER BY code
"""

DEVICES_SQL = """
SELECT device_id, area_code, status, lat, lon, attributes
FROM devices WHERE kind = %s ORDER BY device_id
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class AreaIndex:
    """Areas (streets/townships) by position, with the facts the rates need."""

    codes: tuple[str, ...]
    district: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    land_area_km2: np.ndarray
    heated_area_m2: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def position(self, code: str) -> int:
        """Position of an area code; KeyError when unknown."""
        return self.codes.index(code)

    @classmethod
    def build(
        cls,
        codes: Sequence[str],
        *,
        district: Sequence[str] | None = None,
        heated_area_m2: Sequence[float] | None = None,
        land_area_km2: Sequence[float] | None = None,
        lat: Sequence[float] | None = None,
        lon: Sequence[float] | None = None,
    ) -> AreaIndex:
        """An index from plain lists (tests, benchmarks); missing facts are NaN."""
        n = len(codes)

        def arr(values: Sequence[float] | None) -> np.ndarray:
            return np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64)

        return cls(
            codes=tuple(codes),
            district=tuple(district) if district is not None else ("",) * n,
            lat=arr(lat),
            lon=arr(lon),
            land_area_km2=arr(land_area_km2),
            heated_area_m2=arr(heated_area_m2),
        )


@dataclass(frozen=True, kw_only=True)
class DeviceIndex:
    """The devices of one kind by dense position (0..n-1) and their registry facts."""

    kind: Kind
    ids: np.ndarray  # object array of device ids, sorted
    area: np.ndarray  # int64 position in the AreaIndex
    group: np.ndarray  # int64: schedule class position for lamps, else 0
    active: np.ndarray  # bool: in service
    heated_area_m2: np.ndarray  # float64, NaN when not given
    public: np.ndarray  # bool: charger open to the public
    site: np.ndarray  # int64 position in ``sites`` (-1 without a site)
    sites: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @functools.cached_property
    def _hash_index(self) -> pd.Index:
        # Built once: hashing a million ids per batch would cost more than the batch itself.
        index: pd.Index = pd.Index(self.ids)
        return index

    def lookup(
        self, device_ids: np.ndarray | Sequence[str], hints: np.ndarray | None = None
    ) -> np.ndarray:
        """Positions of ``device_ids`` (int64), -1 for devices not in the registry.

        ``hints``: a guessed position per id (ingest's ``KindBatch.positions``; -1: no guess).
        A guess is kept where the id at that position is the id asked for, and the rest are
        looked up by hash: comparing an id with the one at its guessed place costs a quarter of
        hashing it into a million-entry table, the largest cost of the live path.
        """
        if len(device_ids) == 0:
            return np.empty(0, dtype=np.int64)
        query = np.asarray(device_ids, dtype=object)
        if hints is None or len(self.ids) == 0:
            return self._by_hash(query)
        hints = np.asarray(hints, dtype=np.int64)
        ok = (hints >= 0) & (hints < len(self.ids))
        ok &= self.ids[np.where(ok, hints, 0)] == query
        if ok.all():
            return hints
        found = np.where(ok, hints, -1)
        miss = ~ok
        found[miss] = self._by_hash(query[miss])
        return found

    def _by_hash(self, query: np.ndarray) -> np.ndarray:
        found = self._hash_index.get_indexer(pd.Index(query))
        return np.asarray(found, dtype=np.int64)

    @functools.cached_property
    def _active_counts(self) -> dict[tuple[int, int], np.ndarray]:
        return {}

    def count_active(self, n_areas: int, n_groups: int = 1) -> np.ndarray:
        """In-service devices per (area, group) as an int64 array (a read-only array).

        Counted once per shape: every flush asks for each kind's counts, and the index does not
        change (a registry reload builds a new one).
        """
        key = (n_areas, n_groups)
        out = self._active_counts.get(key)
        if out is None:
            cell = self.area[self.active] * n_groups + self.group[self.active]
            counts = np.bincount(cell, minlength=n_areas * n_groups)[: n_areas * n_groups]
            out = counts.astype(np.int64).reshape(n_areas, n_groups)
            out.flags.writeable = False
            self._active_counts[key] = out
        return out

    @classmethod
    def build(
        cls,
        kind: Kind,
        ids: Sequence[str],
        area: Sequence[int] | np.ndarray,
        *,
        group: Sequence[int] | np.ndarray | None = None,
        active: Sequence[bool] | np.ndarray | None = None,
        heated_area_m2: Sequence[float] | None = None,
        public: Sequence[bool] | None = None,
        site: Sequence[str | None] | None = None,
        lat: Sequence[float] | None = None,
        lon: Sequence[float] | None = None,
    ) -> DeviceIndex:
        """An index from plain lists; rows are reordered by device id."""
        n = len(ids)
        order = np.argsort(np.asarray(ids, dtype=object), kind="stable")

        def take(values: Any, dtype: Any, default: Any) -> np.ndarray:
            if values is None:
                return np.full(n, default, dtype=dtype)
            return np.asarray(values, dtype=dtype)[order]

        site_names = [None] * n if site is None else list(site)
        sites = tuple(sorted({s for s in site_names if s is not None}))
        # by a dict: ``sites.index`` per connector was O(connectors x sites), and a city's
        # 600,000 connectors at 55,000 sites kept `cityops ingest` from starting (soak)
        position = {name: i for i, name in enumerate(sites)}
        site_pos = np.array([-1 if s is None else position[s] for s in site_names], dtype=np.int64)
        return cls(
            kind=kind,
            ids=np.asarray(ids, dtype=object)[order] if n else np.empty(0, dtype=object),
            area=take(area, np.int64, 0),
            group=take(group, np.int64, 0),
            active=take(active, np.bool_, True),
            heated_area_m2=take(heated_area_m2, np.float64, np.nan),
            public=take(public, np.bool_, False),
            site=site_pos[order] if n else site_pos,
            sites=sites,
            lat=take(lat, np.float64, np.nan),
            lon=take(lon, np.float64, np.nan),
        )


def load_areas(
    conn: psycopg.Connection[Any], owns: Callable[[str], bool] | None = None
) -> AreaIndex:
    """Every area of the registry (or those ``owns`` accepts: a worker's partition), by code."""
    rows = [r for r in conn.execute(AREAS_SQL).fetchall() if owns is None or owns(r[0])]

    def col(i: int) -> list[float]:
        return [np.nan if r[i] is None else float(r[i]) for r in rows]

    return AreaIndex.build(
        [r[0] for r in rows],
        district=[r[1] for r in rows],
        lat=col(2),
        lon=col(3),
        land_area_km2=col(4),
        heated_area_m2=col(6),
    )


def load_devices(conn: psycopg.Connection[Any], kind: Kind, areas: AreaIndex) -> DeviceIndex:
    """Every registered device of ``kind`` in ``areas``, with its area position and facts.

    Devices of areas not in ``areas`` (another worker's partition) are left out.
    """
    area_pos = {code: i for i, code in enumerate(areas.codes)}
    rows = [r for r in conn.execute(DEVICES_SQL, (kind.value,)).fetchall() if r[1] in area_pos]
    groups = {c.value: i for i, c in enumerate(SCHEDULE_GROUPS)}
    attrs = [r[5] or {} for r in rows]
    return DeviceIndex.build(
        kind,
        [r[0] for r in rows],
        [area_pos[r[1]] for r in rows],
        group=[groups.get(a.get("schedule_class", "mains"), 0) for a in attrs]
        if kind is Kind.STREETLIGHT
        else None,
        active=[r[2] == DeviceStatus.IN_SERVICE.value for r in rows],
        heated_area_m2=[float(a.get("heated_area_m2", np.nan)) for a in attrs],
        public=[bool(a.get("public", False)) for a in attrs],
        site=[a.get("site_id") for a in attrs],
        lat=[np.nan if r[3] is None else float(r[3]) for r in rows],
        lon=[np.nan if r[4] is None else float(r[4]) for r in rows],
    )


def as_of(devices: DeviceIndex, areas: AreaIndex, present: Mapping[str, str]) -> DeviceIndex:
    """The index as of a past period: ``present`` maps the devices in service then to their area
    then (``cityops.registry.devices_during``); every other device is not active."""
    pos = {code: i for i, code in enumerate(areas.codes)}
    active = np.zeros(len(devices), dtype=np.bool_)
    area = devices.area.copy()
    for i, device_id in enumerate(devices.ids):
        code = present.get(str(device_id))
        if code is not None and code in pos:
            active[i] = True
            area[i] = pos[code]
    return dataclasses.replace(devices, active=active, area=area)

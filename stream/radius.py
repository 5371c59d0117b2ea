"""Charging service radius: the area-equivalent radius and an effective radius on a grid.

- **Area-equivalent radius** √(A ÷ (π·N)): A the land area (km²), N the public charging sites
  with at least one in-service connector. The radius of N equal discs that tile the area; it
  ignores where the sites are and whether they work.
- **Effective radius**: the mean distance (km) from the centres of grid cells to the nearest
  public site that had an available connector in the period. Cells are assigned to the area
  with the nearest centroid (no boundaries are in the registry: this is a Voronoi stand-in,
  labelled as such), and weighted equally, so the mean is area-weighted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg

from stream import kernels
from stream.registry import AreaIndex, DeviceIndex

# The district box of Chaoyang (domain.md).
CHAOYANG_BOX = (116.35, 116.65, 39.80, 40.10)

AVAILABLE_SQL = """
SELECT DISTINCT device_id FROM charger_readings
WHERE ts >= %s AND ts < %s AND status IS NOT NULL AND status NOT IN ('Faulted', 'Unavailable')
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Radius:
    """Service radius of one area (or the whole district, ``scope`` = district name)."""

    scope: str
    sites: int
    equivalent_km: float | None
    effective_km: float | None
    cells: int


def _public_sites(devices: DeviceIndex, usable: np.ndarray) -> np.ndarray:
    """Site positions that are public and have a usable connector."""
    mask = devices.public & devices.active & usable & (devices.site >= 0)
    return np.unique(devices.site[mask])


def site_locations(devices: DeviceIndex, sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean connector location of each site."""
    lat = np.array([np.nanmean(devices.lat[devices.site == s]) for s in sites], dtype=np.float64)
    lon = np.array([np.nanmean(devices.lon[devices.site == s]) for s in sites], dtype=np.float64)
    return lat, lon


def equivalent_radius(land_km2: float, sites: int) -> float | None:
    """√(A ÷ (π·N)) in km; None without sites or area."""
    if sites <= 0 or not land_km2 > 0:
        return None
    return math.sqrt(land_km2 / (math.pi * sites))


def grid(box: tuple[float, float, float, float], cell_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres (lat, lon) of a regular grid of about ``cell_km`` cells over the box."""
    lon0, lon1, lat0, lat1 = box
    mid = math.radians((lat0 + lat1) / 2)
    n_lat = max(1, round((lat1 - lat0) * 111.32 / cell_km))
    n_lon = max(1, round((lon1 - lon0) * 111.32 * math.cos(mid) / cell_km))
    lats = lat0 + (np.arange(n_lat) + 0.5) * (lat1 - lat0) / n_lat
    lons = lon0 + (np.arange(n_lon) + 0.5) * (lon1 - lon0) / n_lon
    glat, glon = np.meshgrid(lats, lons, indexing="ij")
    return glat.ravel(), glon.ravel()


def service_radius(
    areas: AreaIndex,
    devices: DeviceIndex,
    available: np.ndarray,
    *,
    box: tuple[float, float, float, float] = CHAOYANG_BOX,
    cell_km: float = 0.5,
) -> list[Radius]:
    """Both radii per area and for each district; ``available`` is a bool per connector."""
    all_sites = _public_sites(devices, np.ones(len(devices), dtype=np.bool_))
    open_sites = _public_sites(devices, available)
    s_lat, s_lon = site_locations(devices, open_sites)
    c_lat, c_lon = grid(box, cell_km)
    has_centroid = ~(np.isnan(areas.lat) | np.isnan(areas.lon))
    cand = np.flatnonzero(has_centroid)
    if len(cand):
        nearest = kernels.nearest_site(c_lat, c_lon, areas.lat[cand], areas.lon[cand])
        cell_area = cand[nearest]
    else:
        cell_area = np.full(len(c_lat), -1)
    dist = kernels.nearest_distance_km(c_lat, c_lon, s_lat, s_lon)
    # Sites of an area: the area of the site's first connector.
    site_area = {int(s): int(devices.area[np.flatnonzero(devices.site == s)[0]]) for s in all_sites}
    out = []
    for a, code in enumerate(areas.codes):
        n_sites = sum(1 for v in site_area.values() if v == a)
        cells = cell_area == a
        eff = float(dist[cells].mean()) if cells.any() and np.isfinite(dist[cells]).all() else None
        out.append(
            Radius(
                scope=code,
                sites=n_sites,
                equivalent_km=equivalent_radius(float(areas.land_area_km2[a]), n_sites),
                effective_km=eff,
                cells=int(cells.sum()),
            )
        )
    for district in sorted(set(areas.district)):
        members = [a for a, d in enumerate(areas.district) if d == district]
        land = float(np.nansum(areas.land_area_km2[members]))
        n_sites = sum(1 for v in site_area.values() if v in members)
        cells = np.isin(cell_area, members)
        eff = float(dist[cells].mean()) if cells.any() and np.isfinite(dist[cells]).all() else None
        out.append(
            Radius(
                scope=district,
                sites=n_sites,
                equivalent_km=equivalent_radius(land, n_sites),
                effective_km=eff,
                cells=int(cells.sum()),
            )
        )
    return out


def available_connectors(
    conn: psycopg.Connection[Any], devices: DeviceIndex, start: datetime, end: datetime
) -> np.ndarray:
    """Bool per connector: it reported a status other than Faulted/Unavailable in [start, end)."""
    ids = [r[0] for r in conn.execute(AVAILABLE_SQL, (start, end)).fetchall()]
    out = np.zeros(len(devices), dtype=np.bool_)
    pos = devices.lookup(ids)
    out[pos[pos >= 0]] = True
    return out

"""An in-memory copy of the device registry, so per-reading checks never hit the database.

The cache is reloaded completely every ``refresh_s`` seconds, and on a miss (an unknown device)
at most once every ``miss_refresh_s`` seconds, so a device registered a moment ago is found
without a flood of unknown devices turning into a flood of queries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from cityops import registry_version
from cityops.catalog import Kind

log = structlog.get_logger(__name__)

# In code-point order of the ids (COLLATE "C": UTF-8 bytes sort as code points do), the order of
# the stream core's device indexes, so each entry can carry its position there (DeviceEntry).
DEVICES_SQL = (
    "SELECT device_id, kind, gateway_id, status, area_code FROM devices"
    ' ORDER BY device_id COLLATE "C"'
)
AREAS_SQL = "SELECT code, lat, lon FROM areas"
# Complaint coordinates must fall within the areas' centroids' extent plus this margin (degrees;
# 0.1 is about 11 km north-south, 8.5 km east-west at Beijing's latitude): an area's centroid is
# not its edge (the simulated city layout reaches 0.06 degrees past the outermost centroid), and a
# point far outside is a geocoding error (another city, swapped lat/lon).
DISTRICT_MARGIN_DEG = 0.1


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """What ingest needs to know about a registered device."""

    kind: Kind
    gateway_id: str | None
    status: str
    area_code: str | None = None  # the partition key of ingest scale-out (ingest.partition)
    # Position among the registered devices of its kind that have an area, ids in code-point
    # order: where the stream core's DeviceIndex keeps it when it holds the whole registry. Sent
    # on with each reading as a hint the stream core checks (stream.registry.DeviceIndex.lookup),
    # so the live path need not hash every id again; -1 when not known (auto-registered).
    position: int = -1


@dataclass(frozen=True, slots=True)
class Bounds:
    """The district's extent: a latitude/longitude box (margin included)."""

    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float
    margin_deg: float

    def contains(self, lat: float, lon: float) -> bool:
        """The point lies inside the box."""
        return self.lat_min <= lat <= self.lat_max and self.lon_min <= lon <= self.lon_max


def district_bounds(
    points: list[tuple[float, float]], margin_deg: float = DISTRICT_MARGIN_DEG
) -> Bounds | None:
    """The box around the areas' (lat, lon) centroids plus ``margin_deg``; None without any."""
    if not points:
        return None
    lats = [p[0] for p in points]
    lons = [p[1] for p in points]
    return Bounds(
        min(lats) - margin_deg,
        max(lats) + margin_deg,
        min(lons) - margin_deg,
        max(lons) + margin_deg,
        margin_deg,
    )


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """Devices by id, the set of gateway ids, the set of area codes and the district's bounds."""

    devices: dict[str, DeviceEntry]
    gateways: frozenset[str]
    areas: frozenset[str]
    bounds: Bounds | None = None
    version: int | None = None  # the registry's change counter when read (cityops.registry_version)


def load_snapshot(conn: psycopg.Connection[Any]) -> RegistrySnapshot:
    """Read the whole registry (devices and area codes) in one go."""
    devices: dict[str, DeviceEntry] = {}
    gateways: set[str] = set()
    counts = dict.fromkeys(Kind, 0)
    version = registry_version.read(conn)  # before the rows: they are at least this version
    with conn.cursor() as cur:
        for device_id, kind_code, gateway_id, status, area_code in cur.execute(DEVICES_SQL):
            kind = Kind(kind_code)
            position = -1
            if area_code is not None:
                position = counts[kind]
                counts[kind] = position + 1
            devices[device_id] = DeviceEntry(kind, gateway_id, status, area_code, position)
            if gateway_id is not None:
                gateways.add(gateway_id)
        rows = cur.execute(AREAS_SQL).fetchall()
    conn.commit()
    areas = frozenset(row[0] for row in rows)
    points = [(lat, lon) for _, lat, lon in rows if lat is not None and lon is not None]
    return RegistrySnapshot(
        devices, frozenset(gateways), areas, district_bounds(points), version=version
    )


class RegistryCache:
    """Device lookups from memory, refreshed periodically and (rate-limited) on a miss."""

    def __init__(
        self,
        loader: Callable[[], RegistrySnapshot],
        *,
        refresh_s: float = 60.0,
        miss_refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        version: Callable[[], int | None] | None = None,
    ) -> None:
        self._loader = loader
        # The registry's change counter (cityops.registry_version): a refresh whose counter is
        # the loaded snapshot's reads nothing more (a city's registry is a million rows).
        self._version = version
        self.reloads = 0  # full reads of the registry
        self._refresh_s = refresh_s
        self._miss_refresh_s = miss_refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot = RegistrySnapshot({}, frozenset(), frozenset())
        self._added: dict[str, DeviceEntry] = {}
        self._loaded_at = float("-inf")
        self._miss_at = float("-inf")

    def reload(self) -> None:
        """Load the registry now; raise what the loader raises."""
        snapshot = self._loader()
        self.reloads += 1
        with self._lock:
            self._snapshot = snapshot
            self._added = {}
            self._loaded_at = self._miss_at = self._clock()

    def _maybe_reload(self, *, miss: bool) -> None:
        now = self._clock()
        due = now - self._loaded_at >= self._refresh_s
        if miss and now - self._miss_at >= self._miss_refresh_s:
            due = True
            self._miss_at = now
        if not due:
            return
        try:
            current = self._snapshot.version
            if self._version is not None and current is not None and self._version() == current:
                self._loaded_at = now  # unchanged: nothing to read
                return
            self.reload()
        except Exception as err:  # the database may be away: keep the last good copy
            self._loaded_at = now
            log.warning("registry_reload_failed", error=str(err))

    def lookup(self, device_id: str) -> DeviceEntry | None:
        """The registered device, or None when it is unknown even after a refresh."""
        self._maybe_reload(miss=False)
        entry = self._snapshot.devices.get(device_id) or self._added.get(device_id)
        if entry is None:
            self._maybe_reload(miss=True)
            entry = self._snapshot.devices.get(device_id) or self._added.get(device_id)
        return entry

    def is_gateway(self, gateway_id: str) -> bool:
        """Some registered device reports through this gateway."""
        if gateway_id in self._snapshot.gateways:
            return True
        self._maybe_reload(miss=True)
        return gateway_id in self._snapshot.gateways

    def has_area(self, code: str) -> bool:
        """The area code is registered."""
        if code in self._snapshot.areas:
            return True
        self._maybe_reload(miss=True)
        return code in self._snapshot.areas

    def bounds(self) -> Bounds | None:
        """The district's bounds for coordinate checks (None when no area has a centroid)."""
        self._maybe_reload(miss=False)
        return self._snapshot.bounds

    def add(self, device_id: str, entry: DeviceEntry) -> None:
        """Remember a device ingest registered itself (auto-registration)."""
        self._added[device_id] = entry

    def __len__(self) -> int:
        return len(self._snapshot.devices) + len(self._added)

"""The registry as the alert engine sees it: device → kind, area, attributes; group membership."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from cityops.catalog import Kind

DEVICES_SQL = """
SELECT device_id, kind, area_code, status, lat, lon, attributes FROM devices
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceInfo:
    """What the rules need to know about one device."""

    device_id: str
    kind: Kind
    area_code: str
    in_service: bool
    lat: float | None
    lon: float | None
    attributes: dict[str, Any]


class DeviceDirectory:
    """All registered devices, indexed for rule evaluation; reload to pick up registry changes."""

    def __init__(self, devices: list[DeviceInfo] | None = None) -> None:
        self.devices: dict[str, DeviceInfo] = {}
        self.groups: dict[tuple[Kind, str, str], set[str]] = {}
        self._set(devices or [])

    def _set(self, devices: list[DeviceInfo]) -> None:
        self.devices = {d.device_id: d for d in devices}
        groups: dict[tuple[Kind, str, str], set[str]] = defaultdict(set)
        for d in devices:
            if not d.in_service:
                continue
            for attr, value in d.attributes.items():
                if isinstance(value, str):
                    groups[(d.kind, attr, value)].add(d.device_id)
        self.groups = dict(groups)

    @classmethod
    def load(
        cls, conn: psycopg.Connection[Any], owns: Callable[[str], bool] | None = None
    ) -> DeviceDirectory:
        """Read every registered device (or those of the areas ``owns`` accepts)."""
        directory = cls()
        directory.reload(conn, owns)
        return directory

    def reload(
        self, conn: psycopg.Connection[Any], owns: Callable[[str], bool] | None = None
    ) -> None:
        """Re-read the registry (a partitioned worker: only its areas' devices)."""
        self._set(
            [
                DeviceInfo(
                    device_id=r[0],
                    kind=Kind(r[1]),
                    area_code=r[2],
                    in_service=r[3] == "in_service",
                    lat=r[4],
                    lon=r[5],
                    attributes=r[6] or {},
                )
                for r in conn.execute(DEVICES_SQL).fetchall()
                if owns is None or owns(r[2])
            ]
        )

    def get(self, device_id: str) -> DeviceInfo | None:
        """The device, or None when it is not registered."""
        return self.devices.get(device_id)

    def members(self, kind: Kind, attribute: str, value: str) -> set[str]:
        """In-service devices of ``kind`` whose ``attribute`` equals ``value``."""
        return self.groups.get((kind, attribute, value), set())

"""Service radius: the area-equivalent formula and the grid's effective radius."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cityops.catalog import Kind
from stream.radius import equivalent_radius, grid, service_radius
from stream.registry import AreaIndex, DeviceIndex

BOX = (116.40, 116.50, 39.90, 40.00)


def test_equivalent_radius_formula() -> None:
    assert equivalent_radius(math.pi * 9, 1) == pytest.approx(3.0)
    assert equivalent_radius(470.8, 4) == pytest.approx(math.sqrt(470.8 / (4 * math.pi)))
    assert equivalent_radius(10.0, 0) is None


def _fleet() -> tuple[AreaIndex, DeviceIndex]:
    areas = AreaIndex.build(
        ["W", "E"],
        district=["D", "D"],
        lat=[39.95, 39.95],
        lon=[116.425, 116.475],
        land_area_km2=[40.0, 45.0],
    )
    devices = DeviceIndex.build(
        Kind.CHARGER,
        ["C1", "C2", "C3", "C4"],
        [0, 0, 1, 1],
        public=[True, True, True, False],
        site=["S1", "S1", "S2", "S3"],
        lat=[39.95, 39.95, 39.95, 39.95],
        lon=[116.425, 116.425, 116.475, 116.49],
    )
    return areas, devices


def test_effective_radius_counts_only_available_public_sites() -> None:
    areas, devices = _fleet()
    everything = np.ones(len(devices), dtype=bool)
    by_scope = {r.scope: r for r in service_radius(areas, devices, everything, box=BOX, cell_km=1)}
    assert by_scope["W"].sites == 1  # S1 (two connectors)
    assert by_scope["E"].sites == 1  # S2; S3 is private
    assert by_scope["D"].sites == 2
    assert by_scope["D"].equivalent_km == pytest.approx(math.sqrt(85.0 / (2 * math.pi)))
    c_lat, c_lon = grid(BOX, 1)
    assert by_scope["W"].cells + by_scope["E"].cells == len(c_lat)
    # Mean distance from cells to the nearest of the two sites, by hand.
    k = 111.32
    dists = [
        min(
            math.hypot((39.95 - la) * k, (s - lo) * k * math.cos(math.radians(la)))
            for s in (116.425, 116.475)
        )
        for la, lo in zip(c_lat, c_lon, strict=True)
    ]
    assert by_scope["D"].effective_km == pytest.approx(np.mean(dists))
    # S2 down (its only connector unavailable): the east falls back to S1, further away.
    down = np.array([True, True, False, True])
    worse = {r.scope: r for r in service_radius(areas, devices, down, box=BOX, cell_km=1)}
    assert worse["E"].effective_km > by_scope["E"].effective_km
    assert worse["E"].equivalent_km == by_scope["E"].equivalent_km  # counts sites, not status

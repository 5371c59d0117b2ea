"""Every area's live snapshot, computed in one pass, equals each area counted on its own."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from cityops.batch import CommittedBatch, KindBatch, StatusChange
from cityops.catalog import Kind
from cityops.settings import Settings, StreamSettings
from stream import reference
from stream.live import LiveRates
from stream.registry import AreaIndex, DeviceIndex

T = int(datetime(2026, 1, 15, 10, tzinfo=UTC).timestamp() * 1000)


def _batch(kind: Kind, ids: np.ndarray, rng: np.random.Generator, n: int, k: int) -> KindBatch:
    pick = rng.integers(0, len(ids), n)
    ts = T + k * 60_000 + rng.integers(0, 60_000, n)
    if kind is Kind.STREETLIGHT:
        values = [{"power_state": ["on", "off", "dimmed"][i % 3], "power_w": 90.0} for i in pick]
    elif kind is Kind.HEATING:
        # some rooms repeat one value all along: flatlined in the snapshot
        values = [{"temperature_c": 20.0 if i % 5 == 0 else 20.0 + rng.normal()} for i in pick]
    else:
        values = [{"status": ["Available", "Charging", "Faulted"][i % 3]} for i in pick]
    rows = [(str(ids[i]), int(t), int(t), v) for i, t, v in zip(pick, ts, values, strict=True)]
    return KindBatch.from_rows(kind, rows)


@pytest.mark.parametrize("seed", [1, 2])
def test_all_areas_at_once_equal_each_area_alone(seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = [f"A{i:02d}" for i in range(7)]  # A06 has no devices at all
    areas = AreaIndex.build(codes)
    indexes = {}
    for kind, prefix in ((Kind.STREETLIGHT, "L"), (Kind.HEATING, "H"), (Kind.CHARGER, "C")):
        n = 300
        ids = [f"{prefix}{i:04d}" for i in range(n)]
        active = rng.random(n) > 0.1  # some out of service
        indexes[kind] = DeviceIndex.build(kind, ids, rng.integers(0, 6, n), active=active)
    now_s = (T + 125 * 60_000) / 1000  # 12:05: hour 11 is the last complete one
    settings = Settings(stream=StreamSettings(flatline_min=30))
    live = LiveRates(settings, areas, indexes, clock=lambda: now_s)
    for k in range(120):
        readings = {
            kind: _batch(kind, index.ids, rng, 40, k)
            for kind, index in indexes.items()
            if k < 100 or kind is not Kind.CHARGER  # chargers silent for the last 20 minutes
        }
        wills = [
            StatusChange(
                device_id=str(indexes[Kind.STREETLIGHT].ids[int(i)]),
                kind=Kind.STREETLIGHT,
                online=False,
                ts=datetime.fromtimestamp((T + k * 60_000) / 1000, UTC),
            )
            for i in rng.integers(0, 300, 2)
        ]
        live.on_batch(
            CommittedBatch(seq=k, committed_at=datetime.now(UTC), readings=readings,
                           status_changes=wills)
        )  # fmt: skip
    assert live.consumer_errors == 0
    got = live.snapshots()
    assert list(got) == codes

    now_ms = int(now_s * 1000)
    for a, code in enumerate(codes):
        expect = reference.area_snapshot(live, a, code, now_ms)
        assert got[code] == expect
        assert live.snapshot(code) == expect
    # the fixture is not trivial: rates, offline and flatlined sensors are all there
    assert any(s["rates"] for s in got.values())
    assert sum(s["sensors"]["charger"]["offline"] for s in got.values()) > 0
    assert sum(s["sensors"]["heating"]["flatlined"] for s in got.values()) > 0
    assert got["A06"]["sensors"]["streetlight"]["in_service"] == 0


def test_an_unknown_area_is_refused() -> None:
    live = LiveRates(Settings(), AreaIndex.build(["A"]), {})
    with pytest.raises(ValueError, match="not in tuple"):
        live.snapshot("nope")

"""The committed batch encodes catalog values into kernel-friendly columns and back."""

from __future__ import annotations

import numpy as np

from cityops import catalog
from cityops.batch import KindBatch
from cityops.catalog import Kind


def test_round_trip_with_missing_values() -> None:
    rows = [
        (
            "CH-1",
            1000,
            1005,
            catalog.CHARGER.validate_values(
                {"status": "Faulted", "error_code": "GroundFailure", "power_kw": 0}
            ),
        ),
        ("CH-2", 2000, 2005, catalog.CHARGER.validate_values({"status": "Charging"})),
    ]
    b = KindBatch.from_rows(Kind.CHARGER, rows)
    assert len(b) == 2
    assert b.columns["status"].dtype == np.int16
    assert b.columns["status"][0] == catalog.CHARGER.readings[0].allowed.index("Faulted")  # type: ignore[union-attr]
    assert np.isnan(b.columns["power_kw"][1])
    assert b.decode("status", 0) == "Faulted"
    assert b.decode("error_code", 1) is None
    assert b.decode("power_kw", 0) == 0.0
    assert b.decode("session_id", 1) is None


def test_bool_columns_use_minus_one_for_missing() -> None:
    rows = [
        ("MH-1", 1, 1, catalog.MANHOLE.validate_values({"cover_open": True})),
        ("MH-1", 2, 2, catalog.MANHOLE.validate_values({})),
    ]
    b = KindBatch.from_rows(Kind.MANHOLE, rows)
    assert list(b.columns["cover_open"]) == [1, -1]
    assert b.decode("cover_open", 0) is True
    assert b.decode("cover_open", 1) is None

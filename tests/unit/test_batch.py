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


def _value(spec: catalog.FieldSpec, rng: np.random.Generator) -> object:  # noqa: PLR0911
    if rng.random() < 0.3:
        return None
    t = spec.type
    if t is catalog.FieldType.FLOAT:
        return float(rng.normal(10, 5)) if rng.random() < 0.8 else int(rng.integers(0, 9))
    if t is catalog.FieldType.BOOL:
        return bool(rng.random() < 0.5)
    if t is catalog.FieldType.ENUM:
        return str(rng.choice(spec.allowed))  # type: ignore[arg-type]
    if t is catalog.FieldType.INT:
        return int(rng.integers(-5, 10**9))
    if t is catalog.FieldType.DATE:
        import datetime as dt

        return dt.date(2026, 1, 1) + dt.timedelta(days=int(rng.integers(0, 300)))
    return f"s{int(rng.integers(0, 99))}"


def test_columns_encode_as_value_by_value_and_stored_rows_as_dict_rows() -> None:
    from cityops.batch import encode_column, encode_value

    rng = np.random.default_rng(4)
    for kind, spec in catalog.KINDS.items():
        fields = spec.readings
        stored = [
            (f"D{i}", 1000 + i, *(_value(f, rng) for f in fields), 2000 + i) for i in range(300)
        ]
        for j, f in enumerate(fields):
            values = [row[2 + j] for row in stored]
            col = encode_column(f, values)
            one_by_one = [encode_value(f, v) for v in values]
            assert col.dtype == np.dtype(object) or col.dtype.kind in "fiu"
            if col.dtype.kind == "f":
                np.testing.assert_array_equal(col, np.array(one_by_one, dtype=np.float64))
            else:
                assert col.tolist() == one_by_one, (kind, f.name)
        dict_rows = [
            (r[0], r[1], r[-1], {f.name: r[2 + j] for j, f in enumerate(fields)}) for r in stored
        ]
        a = KindBatch.from_stored(kind, stored, positions=list(range(300)))
        b = KindBatch.from_rows(kind, dict_rows, positions=list(range(300)))
        assert a.device_ids.tolist() == b.device_ids.tolist()
        assert a.ts_ms.tolist() == b.ts_ms.tolist()
        assert a.received_ms.tolist() == b.received_ms.tolist()
        assert a.positions is not None
        assert b.positions is not None
        assert a.positions.tolist() == b.positions.tolist()
        for name in a.columns:
            np.testing.assert_array_equal(a.columns[name], b.columns[name])


def test_an_enum_value_outside_its_list_is_refused() -> None:
    import pytest

    from cityops.batch import encode_column

    spec = catalog.CHARGER.reading_field("status")
    assert spec is not None
    with pytest.raises(ValueError, match="'Exploded' is not one of its values"):
        encode_column(spec, ["Charging", "Exploded"])

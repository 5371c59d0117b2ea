"""Import files are read with the location of every row, and validated without a database."""

from __future__ import annotations

import pytest

from cityops import registry
from cityops.errors import ImportFileError, ValidationError

AREAS = {"CY-JW", "CY-CW"}


def test_csv_rows_carry_line_numbers() -> None:
    text = "device_id,kind,area_code\nA,heating,CY-JW\nB,heating,CY-CW\n"
    recs = list(registry.parse_records(text, "csv"))
    assert [r.location for r in recs] == ["line 2", "line 3"]


def test_json_array_and_lines() -> None:
    recs = list(registry.parse_records('[{"a": 1}, 5]', "json"))
    assert [r.location for r in recs] == ["record 1", "record 2"]
    with pytest.raises(ValidationError, match="expected an object"):
        registry.validate_device(recs[1], AREAS)
    lines = list(registry.parse_records('{"a": 1}\n\n{broken\n', "jsonl"))
    assert [r.location for r in lines] == ["line 1", "line 3"]
    with pytest.raises(ValidationError, match="not valid JSON"):
        registry.validate_device(lines[1], AREAS)


def test_unreadable_files_are_file_errors() -> None:
    with pytest.raises(ImportFileError, match="no header"):
        list(registry.parse_records("", "csv"))
    with pytest.raises(ImportFileError, match="JSON array"):
        list(registry.parse_records('{"a": 1}', "json"))
    with pytest.raises(ImportFileError, match="unknown format"):
        list(registry.parse_records("x", "xls"))


def test_device_csv_row_validation() -> None:
    header = "device_id,kind,area_code,lat,lon,schedule_class,rated_power_w,site_id,public\n"
    text = header + "SL-1,streetlight,CY-JW,39.9,116.4,solar,60,,\n"
    rec = next(registry.parse_records(text, "csv"))
    device = registry.validate_device(rec, AREAS)
    assert device["attributes"] == {"schedule_class": "solar", "rated_power_w": 60.0}
    assert device["status"] == "in_service"
    bad = header + "SL-2,streetlight,CY-JW,39.9,116.4,solar,60,S-1,\n"
    with pytest.raises(ValidationError, match="site_id: not an attribute of a streetlight"):
        registry.validate_device(next(registry.parse_records(bad, "csv")), AREAS)


def test_device_json_nested_attributes() -> None:
    text = (
        '[{"device_id": "CH-1", "kind": "charger", "area_code": "CY-CW", '
        '"attributes": {"site_id": "S1", "public": true, "power_kw": 7}}]'
    )
    device = registry.validate_device(next(registry.parse_records(text, "json")), AREAS)
    assert device["attributes"] == {"site_id": "S1", "public": True, "power_kw": 7.0}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('{"device_id": "X", "kind": "bench", "area_code": "CY-JW"}', "kind"),
        ('{"device_id": "X", "kind": "heating", "area_code": "CY-XX"}', "not a registered area"),
        ('{"kind": "heating", "area_code": "CY-JW"}', "device_id: required"),
        (
            '{"device_id": "X", "kind": "heating", "area_code": "CY-JW", "colour": "red"}',
            "colour: unknown column",
        ),
        ('{"device_id": "X", "kind": "manhole", "area_code": "CY-JW"}', "owner_unit: required"),
        (
            '{"device_id": "X", "kind": "heating", "area_code": "CY-JW", '
            '"install_date": "2024-13-01"}',
            "install_date",
        ),
    ],
)
def test_bad_device_rows(row: str, message: str) -> None:
    rec = next(registry.parse_records(row, "jsonl"))
    with pytest.raises(ValidationError, match=message):
        registry.validate_device(rec, AREAS)


def test_reference_areas_are_the_43_chaoyang_units_and_say_what_is_generated() -> None:
    recs = registry.reference_area_records()
    areas = [registry.validate_area(r) for r in recs]
    assert len(areas) == 43
    assert sum(a["type"] == "street" for a in areas) == 24
    assert all("population" in a["generated"] for a in areas)
    assert round(sum(a["heated_area_m2"] for a in areas)) == 224_000_000
    assert sum(a["population"] for a in areas) == 3_440_000
    for a in areas:
        assert 116.35 <= a["lon"] <= 116.65
        assert 39.80 <= a["lat"] <= 40.10

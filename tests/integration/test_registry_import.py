"""Registry import stores good rows, reports every bad one with its line, and lists devices."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from cityops import registry

pytestmark = pytest.mark.pg

DEVICES_CSV = """\
device_id,kind,area_code,lat,lon,gateway_id,install_date,status,road,schedule_class,rated_power_w,cabinet_id,owner_unit,site_id,public,power_kw,heated_area_m2,compound
SL-1,streetlight,CY-JW,39.906,116.452,GW-1,2023-05-01,,朝阳路,mains,120,CAB-1,,,,,,
SL-2,streetlight,CY-JW,39.907,116.453,GW-1,,,朝阳路,solar,,CAB-1,,,,,,
SL-3,streetlight,CY-NOPE,39.907,116.453,GW-1,,,朝阳路,solar,,,,,,,,
MH-1,manhole,CY-CW,39.92,116.43,,,,朝阳北路,,,,telecom,,,,,
MH-2,manhole,CY-CW,39.92,116.43,,,,,,,,plumbing,,,,,
CH-1,charger,CY-WJ,40.0,116.47,,,maintenance,,,,,,SITE-1,true,7,,
CH-2,charger,CY-WJ,40.0,116.47,,,,,,,,,SITE-1,,7,,
HT-1,heating,CY-SJ,39.89,116.46,,,,,,,,,,,,85.5,劲松小区
HT-1,heating,CY-SJ,39.89,116.46,,,,,,,,,,,,85.5,劲松小区
HT-2,heating,CY-SJ,91,116.46,,,,,,,,,,,,85.5,劲松小区
"""


def _import(dsn: str, text: str, fmt: str = "csv") -> registry.ImportReport:
    with psycopg.connect(dsn) as conn:
        return registry.import_devices(conn, list(registry.parse_records(text, fmt)), "t")


def test_csv_import_stores_good_rows_and_reports_bad_ones_by_line(migrated_db: str) -> None:
    report = _import(migrated_db, DEVICES_CSV)
    assert report.total == 10
    assert report.stored == 5
    errors = {e.location: e.message for e in report.errors}
    assert set(errors) == {"line 4", "line 6", "line 8", "line 10", "line 11"}
    assert "CY-NOPE" in errors["line 4"]
    assert "owner_unit" in errors["line 6"]
    assert "public: required" in errors["line 8"]
    assert "repeated" in errors["line 10"]
    assert "lat" in errors["line 11"]
    with psycopg.connect(migrated_db) as conn:
        rows = dict(conn.execute("SELECT device_id, attributes FROM devices").fetchall())
    assert set(rows) == {"SL-1", "SL-2", "MH-1", "CH-1", "HT-1"}
    assert rows["SL-1"] == {
        "road": "朝阳路",
        "schedule_class": "mains",
        "rated_power_w": 120.0,
        "cabinet_id": "CAB-1",
    }
    assert rows["CH-1"] == {"site_id": "SITE-1", "public": True, "power_kw": 7.0}
    assert rows["HT-1"] == {"heated_area_m2": 85.5, "compound": "劲松小区"}


def test_reimport_updates_and_kind_change_is_refused(migrated_db: str) -> None:
    _import(migrated_db, DEVICES_CSV)
    update = (
        '[{"device_id": "SL-1", "kind": "streetlight", "area_code": "CY-CW", '
        '"status": "retired", "attributes": {"schedule_class": "mains"}},'
        '{"device_id": "MH-1", "kind": "heating", "area_code": "CY-CW"}]'
    )
    report = _import(migrated_db, update, "json")
    assert report.stored == 1
    assert len(report.errors) == 1
    assert report.errors[0].location == "record 2"
    assert "registered as a manhole" in report.errors[0].message
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute(
            "SELECT area_code, status, attributes FROM devices WHERE device_id = 'SL-1'"
        ).fetchone() == ("CY-CW", "retired", {"schedule_class": "mains"})
        assert conn.execute("SELECT kind FROM devices WHERE device_id = 'MH-1'").fetchone() == (
            "manhole",
        )


def test_area_import_reports_bad_rows(migrated_db: str, tmp_path: Path) -> None:
    f = tmp_path / "areas.csv"
    f.write_text(
        "code,name_zh,name_en,type,district,population,generated\n"
        "X-1,测试一,Test 1,street,Test,1000,population\n"
        "X-2,测试二,Test 2,village,Test,,\n"
        "X-3,,Test 3,street,Test,,\n"
        "X-4,测试四,Test 4,area,Test,-5,\n"
        "X-5,测试五,Test 5,township,Test,,colour\n",
        encoding="utf-8",
    )
    with psycopg.connect(migrated_db) as conn:
        report = registry.import_areas(conn, registry.read_records(f), str(f))
        assert report.stored == 1
        assert [e.location for e in report.errors] == ["line 3", "line 4", "line 5", "line 6"]
        assert conn.execute("SELECT generated FROM areas WHERE code = 'X-1'").fetchone() == (
            ["population"],
        )


def test_list_devices_filters_and_pages(migrated_db: str) -> None:
    _import(migrated_db, DEVICES_CSV)
    with psycopg.connect(migrated_db) as conn:
        assert [d.device_id for d in registry.list_devices(conn, kind="streetlight")] == [
            "SL-1",
            "SL-2",
        ]
        assert [d.device_id for d in registry.list_devices(conn, gateway="GW-1")] == [
            "SL-1",
            "SL-2",
        ]
        assert [d.device_id for d in registry.list_devices(conn, status="maintenance")] == ["CH-1"]
        first = registry.list_devices(conn, limit=2)
        second = registry.list_devices(conn, limit=2, after=first[-1].device_id)
        assert [d.device_id for d in first + second] == ["CH-1", "HT-1", "MH-1", "SL-1"]
        assert registry.list_devices(conn, area="CY-SJ")[0].attributes["compound"] == "劲松小区"
        with pytest.raises(Exception, match="kind"):
            registry.list_devices(conn, kind="bench")


def test_large_import_goes_through_copy(migrated_db: str) -> None:
    lines = ["device_id,kind,area_code,site_id,public"]
    lines += [f"CH-{i:06d},charger,CY-WJ,SITE-{i // 10},true" for i in range(20_000)]
    report = _import(migrated_db, "\n".join(lines) + "\n")
    assert (report.stored, report.errors) == (20_000, [])
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (20_000,)

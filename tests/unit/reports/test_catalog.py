"""The shipped catalog, local additions, observation CSV parsing and month arithmetic."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from cityops.errors import ValidationError
from reports import catalog, formats, observations
from reports.catalog import IndicatorKind, SensorMetric
from reports.evaluation import Status
from reports.monthly import Month


def test_shipped_catalog_matches_the_plans() -> None:
    cat = catalog.build()
    assert len(cat.indicators) == 42
    assert cat.version == catalog.build().version  # deterministic
    heat = cat.get("cy-gov-25")
    assert heat.kind is IndicatorKind.RELATIVE_CHANGE
    assert heat.resolved_target == 0.621
    assert heat.sensor_metric is SensorMetric.HEATING_COMPLAINT_DENSITY
    assert cat.get("bj-cm-14").resolved_target == 9.72
    assert cat.get("cy-gov-03").resolved_target is None  # withheld in the source
    assert cat.get("cy-gov-16").reference_date == date(2021, 12, 31)
    linked = {i.key for i in cat.indicators if i.sensor_metric}
    assert linked == {"cy-gov-05", "cy-gov-15", "cy-gov-25", "bj-cm-03", "bj-cm-04"}
    with pytest.raises(ValidationError, match="unknown indicator"):
        cat.get("nope")


def test_local_rows_add_and_replace_and_change_the_version() -> None:
    base = catalog.build()
    local = catalog.parse_csv(
        "key,name_zh,direction,kind,target_2025\n"
        "cy-gov-03,拆除存量违法建设,up,cumulative,500\n"
        "local-01,本地指标,down,level,2\n",
        local=True,
    )
    merged = catalog.build(local)
    assert merged.version != base.version
    assert merged.version.startswith(catalog.EDITION + "+")
    assert merged.get("cy-gov-03").target == 500
    assert merged.get("cy-gov-03").local
    assert merged.indicators[-1].key == "local-01"
    assert len(merged.indicators) == 43


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("key,name_en,direction,kind\nx,n,sideways,level\n", "direction"),
        ("key,name_zh,direction,kind\nx,名,up,levels\n", "kind"),
        ("key,name_zh,direction,kind,target_2025\nx,名,up,level,lots\n", "not a number"),
        (
            "key,name_zh,direction,kind,target_2025,target_change\nx,名,up,level,1,-0.1\n",
            "not both",
        ),
        ("key,name_zh,direction,kind,target_change\nx,名,down,relative_change,-1.5\n", "-0.10"),
        ("key,name_zh,direction,kind\nx,名,up,level\nx,名,up,level\n", "duplicate"),
        ("name_zh,direction\n名,up\n", "missing columns"),
    ],
)
def test_bad_catalog_rows_are_named(text: str, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        catalog.parse_csv(text)


def test_observation_csv_accepts_labels_and_rejects_bad_rows_together() -> None:
    cat = catalog.build()
    rows = observations.parse_observations_csv(
        cat,
        "\ufeffindicator,observed_on,value,status,source\n"
        "cy-gov-09,2023-06-30,18.2,,区城管委\n"
        "bj-cm-01,2023-06-30,,可以完成,市发改委\n"
        "bj-cm-02,2023-06-30,,完成存在困难,市城管委\n",
    )
    assert [r.status for r in rows] == [None, Status.ON_TRACK, Status.ADJUST]
    with pytest.raises(ValidationError) as err:
        observations.parse_observations_csv(
            cat,
            "indicator,observed_on,value,source\n"
            "cy-gov-09,2023-06-31,1,x\n"
            "cy-gov-09,2023-06-30,,x\n"
            "cy-gov-09,2023-06-30,1,\n"
            "cy-gov-09,2023-06-30,nan,x\n",
        )
    message = str(err.value)
    assert "4 bad rows, none stored" in message
    for line in ("line 2", "line 3", "line 4", "line 5"):
        assert line in message
    with pytest.raises(ValidationError, match="missing columns"):
        observations.parse_observations_csv(cat, "indicator,value\n")
    with pytest.raises(ValidationError, match="status"):
        observations.parse_status("done")


def test_month_boundaries_in_local_time() -> None:
    m = Month.parse("2026-01", "Asia/Shanghai")
    assert m.start == datetime(2025, 12, 31, 16, tzinfo=UTC)
    assert m.end == datetime(2026, 1, 31, 16, tzinfo=UTC)
    assert m.hours == 744
    assert m.shift(-1).label == "2025-12"
    assert m.shift(-12).label == "2025-01"
    assert Month.parse("2026-02", "Asia/Shanghai").hours == 672
    for bad in ("2026-00", "2026-13", "202601", "1999-01", "9999-12", ""):
        with pytest.raises(ValidationError, match="YYYY-MM"):
            Month.parse(bad, "Asia/Shanghai")


def test_format_list() -> None:
    assert formats.parse_formats("xlsx, PDF,json,xlsx") == [
        formats.Format.XLSX,
        formats.Format.PDF,
        formats.Format.JSON,
    ]
    with pytest.raises(ValidationError, match="at least one"):
        formats.parse_formats(" , ")

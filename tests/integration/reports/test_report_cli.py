"""`cityops report` and `cityops indicators` end to end, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import psycopg
import pytest

from tests.integration.reports.test_monthly_report import seed

pytestmark = pytest.mark.pg


def _run(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env["CITYOPS_DB_DSN"] = dsn
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "cityops", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_report_monthly_writes_files_and_records_the_run(migrated_db: str, tmp_path: Path) -> None:
    seed(migrated_db)
    r = _run(
        migrated_db,
        "report",
        "monthly",
        "--month",
        "2026-01",
        "--format",
        "xlsx,json,csv,html",
        "--out",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "cityops-monthly-Chaoyang-2026-01.csv",
        "cityops-monthly-Chaoyang-2026-01.html",
        "cityops-monthly-Chaoyang-2026-01.json",
        "cityops-monthly-Chaoyang-2026-01.xlsx",
    ]
    data = json.loads((tmp_path / "cityops-monthly-Chaoyang-2026-01.json").read_text())
    light = next(
        x for x in data["rates"] if x["scope"] == "Chaoyang" and x["metric"] == "lighting_rate"
    )
    assert light["value"] == round(800 / 900, 9)
    wb = openpyxl.load_workbook(tmp_path / "cityops-monthly-Chaoyang-2026-01.xlsx")
    assert "Rates" in wb.sheetnames
    with psycopg.connect(migrated_db) as conn:
        row = conn.execute(
            "SELECT catalog_version, formats FROM report_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row == (data["catalog_version"], ["xlsx", "json", "csv", "html"])

    bad = _run(migrated_db, "report", "monthly", "--month", "26-1", "--format", "json")
    assert bad.returncode == 1
    assert "YYYY-MM" in bad.stderr
    bad = _run(migrated_db, "report", "monthly", "--month", "2026-01", "--format", "docx")
    assert bad.returncode == 1
    assert "docx" in bad.stderr


@pytest.mark.slow
def test_indicators_observations_forecast_evaluate(migrated_db: str, tmp_path: Path) -> None:
    r = _run(migrated_db, "indicators", "list", "--plan", "cy-gov")
    assert r.returncode == 0, r.stderr
    assert "cy-gov-25" in r.stdout
    assert "2026.1+" in r.stdout

    csv_file = tmp_path / "obs.csv"
    csv_file.write_text(
        "indicator,observed_on,value,status,source,note\n"
        "cy-gov-01,2023-06-30,135,,区城管委,alleys done\n"
        "bj-cm-01,2023-06-30,99.99,可以完成,市发改委,authority judgement\n",
        encoding="utf-8",
    )
    r = _run(migrated_db, "indicators", "import-observations", str(csv_file))
    assert r.returncode == 0, r.stderr
    assert "stored 2 observation(s) of 2 indicator(s)" in r.stdout

    bad_file = tmp_path / "bad.csv"
    bad_file.write_text(
        "indicator,observed_on,value,source\nnope-1,2023-01-01,1,x\ncy-gov-01,2023-02-30,1,x\n",
        encoding="utf-8",
    )
    r = _run(migrated_db, "indicators", "import-observations", str(bad_file))
    assert r.returncode == 1
    assert "line 2" in r.stderr
    assert "line 3" in r.stderr

    r = _run(
        migrated_db,
        "indicators",
        "add-observation",
        "--indicator",
        "cy-gov-21",
        "--date",
        "2023-06-30",
        "--value",
        "4",
        "--source",
        "区住建委",
    )
    assert r.returncode == 0, r.stderr
    r = _run(
        migrated_db,
        "indicators",
        "add-forecast",
        "--indicator",
        "cy-gov-21",
        "--value",
        "12",
        "--reason",
        "two tunnels postponed",
        "--made-on",
        "2023-06-30",
        "--proposed-target",
        "12",
    )
    assert r.returncode == 0, r.stderr

    r = _run(migrated_db, "indicators", "evaluate", "--as-of", "2023-07-02", "--json")
    assert r.returncode == 0, r.stderr
    section = json.loads(r.stdout)
    rows = {x["key"]: x for x in section["rows"]}
    assert rows["cy-gov-01"]["status"] == "on_track"  # 135/270 = 0.5 = time share
    assert rows["bj-cm-01"]["status"] == "on_track"
    assert rows["bj-cm-01"]["authority_status"] is True
    tunnels = rows["cy-gov-21"]
    assert tunnels["status"] == "adjust"
    assert tunnels["proposed_target"] == 12
    assert "two tunnels postponed" in tunnels["reason"]

    r = _run(migrated_db, "indicators", "evaluate", "--as-of", "2020-05-01")
    assert r.returncode == 1
    assert "before the plan period" in r.stderr

    local = tmp_path / "local.csv"
    local.write_text(
        "key,name_zh,direction,kind,baseline_2020,target_2025,attribute\n"
        "cy-gov-03,拆除存量违法建设,up,cumulative,0,500,binding\n",
        encoding="utf-8",
    )
    r = _run(migrated_db, "indicators", "add-local", str(local))
    assert r.returncode == 0, r.stderr
    r = _run(migrated_db, "indicators", "evaluate", "--as-of", "2023-07-02", "--json")
    rows = {x["key"]: x for x in json.loads(r.stdout)["rows"]}
    assert rows["cy-gov-03"]["target"] == 500
    assert rows["cy-gov-03"]["status"] == "pending"  # a target now, but no observation yet

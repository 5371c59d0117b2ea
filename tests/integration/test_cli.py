"""The `cityops` command end to end against a real database, as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pg


def _run(
    dsn: str, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env["CITYOPS_DB_DSN"] = dsn
    env["CITYOPS_STORAGE_TIMESCALEDB"] = "off"
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "cityops", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_migrate_status_import_list(empty_db: str, tmp_path: Path) -> None:
    r = _run(empty_db, "db", "migrate")
    assert r.returncode == 0, r.stderr
    assert "applied 0001_timeseries_support" in r.stdout
    assert "storage path: partitioned" in r.stdout
    r = _run(empty_db, "db", "migrate")
    assert "schema is up to date" in r.stdout

    assert _run(empty_db, "areas", "reference").returncode == 0
    devices = tmp_path / "devices.csv"
    devices.write_text(
        "device_id,kind,area_code,owner_unit\nMH-1,manhole,CY-JW,telecom\nMH-2,manhole,CY-JW,\n",
        encoding="utf-8",
    )
    r = _run(empty_db, "devices", "import", str(devices))
    assert r.returncode == 1
    assert "line 3: owner_unit: required" in r.stderr
    assert "2 row(s) read, 1 stored, 1 rejected" in r.stdout

    r = _run(empty_db, "devices", "list", "--kind", "manhole", "--json")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["device_id"] for line in r.stdout.splitlines()] == ["MH-1"]

    r = _run(empty_db, "db", "status", "--json", "--exact")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["storage_path"] == "partitioned"
    assert st["pending_migrations"] == []
    rows = {t["name"]: t["rows"] for t in st["tables"]}
    assert rows["devices"] == 1
    assert rows["areas"] == 43

    r = _run(empty_db, "db", "maintain")
    assert r.returncode == 0, r.stderr
    assert "created 0 partition(s)" in r.stdout


def test_bad_setting_fails_at_startup_naming_the_field(empty_db: str) -> None:
    r = _run(empty_db, "db", "status", extra_env={"CITYOPS_DB_POOL_MAX": "lots"})
    assert r.returncode == 2
    assert "db.pool_max (CITYOPS_DB_POOL_MAX)" in r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_database_is_one_clear_line() -> None:
    r = _run("postgresql://postgres@127.0.0.1:1/nowhere", "db", "status")
    assert r.returncode == 1
    assert "cannot connect to PostgreSQL" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_every_command_has_help() -> None:
    for args in (
        ["--help"],
        ["db", "--help"],
        ["db", "migrate", "--help"],
        ["areas", "import", "--help"],
        ["devices", "list", "--help"],
        ["catalog", "docs", "--help"],
    ):
        r = _run("postgresql://unused@127.0.0.1/x", *args)
        assert r.returncode == 0, (args, r.stderr)
        assert "Usage" in r.stdout

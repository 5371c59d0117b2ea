"""`cityops rates recompute` and `cityops rates show` as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from cityops.catalog import Kind
from tests.integration.stream import fleet

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
def test_recompute_then_show(migrated_db: str) -> None:
    rows = fleet.random_rows(seed=3)
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        fleet.register(conn)
        conn.commit()
        fleet.store(conn, Kind.STREETLIGHT, rows[Kind.STREETLIGHT])
        fleet.store(conn, Kind.CHARGER, rows[Kind.CHARGER])
    window = ("--from", "2026-01-31T16:00+08:00", "--to", "2026-02-01T12:00+08:00")
    r = _run(migrated_db, "rates", "recompute", *window, "--kind", "streetlight")
    assert r.returncode == 0, r.stderr
    assert "rate rows written for 20 hour(s)" in r.stdout
    with psycopg.connect(migrated_db) as conn:
        first = conn.execute(
            "SELECT area_code, metric, hour, numerator, denominator"
            " FROM rates_hourly ORDER BY 1, 2, 3"
        ).fetchall()
        kinds = {k for (k,) in conn.execute("SELECT DISTINCT kind FROM rates_hourly")}
    assert kinds == {"streetlight"}
    assert {m for _, m, *_ in first} >= {"lighting_rate", "lighting_snapshot", "lamp_faults"}

    # One area again: only that area's rows are replaced, with the same values.
    r = _run(migrated_db, "rates", "recompute", *window, "--area", "CY-JW", "--kind", "streetlight")
    assert r.returncode == 0, r.stderr
    with psycopg.connect(migrated_db) as conn:
        again = conn.execute(
            "SELECT area_code, metric, hour, numerator, denominator"
            " FROM rates_hourly ORDER BY 1, 2, 3"
        ).fetchall()
    assert again == first

    r = _run(
        migrated_db,
        "rates",
        "show",
        "streetlight",
        *window,
        "--metric",
        "lighting_rate",
        "--grain",
        "month",
        "--level",
        "district",
    )
    assert r.returncode == 0, r.stderr
    assert "Chaoyang" in r.stdout
    assert "lighting_rate" in r.stdout

    r = _run(migrated_db, "rates", "radius", *window, "--cell-km", "2")
    assert r.returncode == 0, r.stderr
    # Each of the three areas has one public site (SITE-0..2) with reported connectors.
    lines = {ln.split("│")[1].strip(): ln for ln in r.stdout.splitlines() if ln.count("│") > 3}
    assert set(fleet.AREAS) <= set(lines)
    assert lines["CY-JW"].split("│")[2].strip() == "1"
    assert lines["Chaoyang"].split("│")[2].strip() == "3"

    r = _run(migrated_db, "rates", "recompute", "--from", "2026-02-01", "--to", "2026-01-01")
    assert r.returncode != 0
    assert "--to must be after --from" in r.stderr

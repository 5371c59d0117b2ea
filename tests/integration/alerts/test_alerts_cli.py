"""Duty staff at the command line: rules check, list, ack, silence, cases advance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cityops.catalog import Kind
from tests.integration.alerts.conftest import NIGHT, Harness

pytestmark = pytest.mark.pg


def _run(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env["CITYOPS_DB_DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "cityops", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_rules_check(tmp_path: Path) -> None:
    r = _run("postgresql://unused@127.0.0.1/x", "rules", "check")
    assert r.returncode == 0, r.stderr
    assert "18 rule(s) valid" in r.stdout
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        "version: 1\nrules:\n - name: low\n   type: threshold\n   kind: manhole\n"
        "   field: battery_pct\n   op: '<'\n   value: 15\n   clear: 5\n"
    )
    r = _run("postgresql://unused@127.0.0.1/x", "rules", "check", str(bad))
    assert r.returncode == 1
    assert "rules[0] 'low': clear: must be at or above value" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_list_ack_silence_and_case_advance(harness: Harness) -> None:
    (notice,) = harness.readings(Kind.MANHOLE, [("MH-1", NIGHT, {"cover_open": True})])
    dsn = harness.dsn
    r = _run(dsn, "alerts", "list", "--open", "--json")
    assert r.returncode == 0, r.stderr
    assert '"rule": "cover_open"' in r.stdout
    r = _run(dsn, "alerts", "ack", str(notice.alert_id), "--by", "duty-1")
    assert r.returncode == 0, r.stderr
    r = _run(dsn, "alerts", "ack", str(notice.alert_id), "--by", "duty-2")
    assert r.returncode == 1
    assert "already acknowledged" in r.stderr
    r = _run(
        dsn,
        "alerts",
        "silence",
        "--by",
        "duty-1",
        "--match",
        "area_code=CY-JW",
        "--for",
        "90m",
        "--comment",
        "road works",
    )
    assert r.returncode == 0, r.stderr
    assert "silence 1 until" in r.stdout
    r = _run(dsn, "alerts", "silence", "--by", "duty-1", "--match", "area_code~CY")
    assert r.returncode == 1
    assert "use name=value" in r.stderr
    case_id = harness.query("SELECT case_id FROM alerts WHERE id = %s", notice.alert_id)[0][0]
    r = _run(dsn, "cases", "advance", str(case_id), "dispatched", "--by", "duty-1")
    assert r.returncode == 1
    assert "cannot move from detected (发现) to dispatched (派遣)" in r.stderr
    r = _run(dsn, "cases", "advance", str(case_id), "filed", "--by", "duty-1")
    assert r.returncode == 0, r.stderr
    assert "filed (立案)" in r.stdout
    assert harness.query(
        "SELECT actor, to_stage FROM case_events WHERE case_id = %s ORDER BY id DESC LIMIT 1",
        case_id,
    ) == [("duty-1", "filed")]

"""Grafana provisioning: dashboard JSON is well formed, refers to provisioned datasources, and
every panel's SQL runs -- as the read-only Grafana login role -- against a migrated database
with rows in it, returning columns of the shape the panel expects."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.integration.deploy.conftest import DEPLOY

DASHBOARDS = sorted((DEPLOY / "grafana/dashboards").glob("*.json"))
PROVISIONING = DEPLOY / "grafana/provisioning"
FROM = datetime(2026, 1, 1, tzinfo=UTC)
TO = datetime(2026, 2, 20, tzinfo=UTC)
VARIABLES = {"area": "'CY-JW','CY-CW','CY-SLT'", "kind": "streetlight", "device": "SL-1"}
TIMESTAMPTZ, TEXT = 1184, 25
NUMERIC = {20, 21, 23, 700, 701, 1700}  # int8 int2 int4 float4 float8 numeric
INTERVALS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _datasources() -> dict[str, str]:
    data = yaml.safe_load((PROVISIONING / "datasources/cityops.yaml").read_text(encoding="utf-8"))
    return {ds["uid"]: ds["type"] for ds in data["datasources"]}


def _sql_targets() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    out = []
    for path in DASHBOARDS:
        board = _load(path)
        for panel in board["panels"]:
            for target in panel["targets"]:
                if "rawSql" in target:
                    out.append((path.name, panel["title"], panel, target))
    return out


# --- structure ---------------------------------------------------------------------------------


def test_the_four_dashboards_are_provisioned() -> None:
    uids = {_load(p)["uid"] for p in DASHBOARDS}
    assert uids == {"cityops-district", "cityops-device", "cityops-indicators", "cityops-pipeline"}
    provider = yaml.safe_load((PROVISIONING / "dashboards/cityops.yaml").read_text("utf-8"))
    (prov,) = provider["providers"]
    assert prov["type"] == "file"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == prov["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_json_is_well_formed(path: Path) -> None:
    board = _load(path)
    for key in ("uid", "title", "panels", "schemaVersion", "time", "templating"):
        assert key in board, key
    assert len(board["uid"]) <= 40
    sources = _datasources()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    defined = {v["name"] for v in board["templating"]["list"]}
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"]["uid"] in sources
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        assert grid["w"] > 0
        assert grid["h"] > 0
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] in sources, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            uid = target["datasource"]["uid"]
            assert sources[uid] == target["datasource"]["type"], panel["title"]
            text = target.get("rawSql") or target.get("expr") or ""
            assert text, panel["title"]
            used = set(re.findall(r"\$\{?([A-Za-z]\w*)", text))
            assert used <= defined, f"{panel['title']}: undefined variables {used - defined}"
            if sources[uid] == "prometheus":
                assert "rawSql" not in target
            else:
                assert target["format"] in ("time_series", "table")


def test_datasource_provisioning() -> None:
    data = yaml.safe_load((PROVISIONING / "datasources/cityops.yaml").read_text(encoding="utf-8"))
    pg = next(d for d in data["datasources"] if d["uid"] == "cityops-postgres")
    assert pg["user"] == "grafana_reader"
    assert pg["secureJsonData"]["password"] == "${GRAFANA_DB_PASSWORD}"
    assert pg["jsonData"]["database"] == "cityops"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert "GRAFANA_DB_PASSWORD" in compose["services"]["grafana"]["environment"]
    init = (DEPLOY / "db/init/10-grafana-role.sh").read_text(encoding="utf-8")
    assert "GRAFANA_DB_USER:-grafana_reader" in init


# --- the SQL -----------------------------------------------------------------------------------


def _lit(ts: datetime) -> str:
    return "'" + ts.strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def _seconds(arg: str) -> int:
    arg = arg.strip().strip("'\"")
    if arg == "$__interval":
        return 3600
    match = re.fullmatch(r"(\d+)([smhd])", arg)
    assert match, f"interval {arg!r}"
    return int(match.group(1)) * INTERVALS[match.group(2)]


def substitute(text: str, variables: dict[str, str] = VARIABLES) -> str:
    """Grafana's PostgreSQL macros and template variables, for the fixed test range."""

    def group(m: re.Match[str], alias: bool) -> str:
        col, interval = m.group(1).strip(), _seconds(m.group(2))
        expr = f"to_timestamp(floor(extract(epoch FROM {col}) / {interval}) * {interval})"
        return expr + (' AS "time"' if alias else "")

    text = re.sub(r"\$__timeGroupAlias\(([^,()]+),\s*([^()]+?)\)", lambda m: group(m, True), text)
    text = re.sub(r"\$__timeGroup\(([^,()]+),\s*([^()]+?)\)", lambda m: group(m, False), text)
    text = re.sub(
        r"\$__timeFilter\(([^()]+)\)",
        lambda m: f"({m.group(1)} BETWEEN {_lit(FROM)} AND {_lit(TO)})",
        text,
    )
    text = text.replace("$__timeFrom()", _lit(FROM)).replace("$__timeTo()", _lit(TO))
    for name, value in variables.items():
        text = re.sub(r"\$\{" + name + r"(?::\w+)?\}|\$" + name + r"\b", value, text)
    assert "$" not in text.replace("$$", ""), f"unsubstituted macro or variable in: {text}"
    return text


def test_substitution_of_macros() -> None:
    got = substitute(
        "SELECT $__timeGroupAlias(hour, '1h') WHERE $__timeFilter(hour) AND a IN ($area)"
    )
    assert 'floor(extract(epoch FROM hour) / 3600) * 3600) AS "time"' in got
    assert "hour BETWEEN '2026-01-01T00:00:00Z' AND '2026-02-20T00:00:00Z'" in got
    assert "a IN ('CY-JW','CY-CW','CY-SLT')" in got


def _seed(conn: psycopg.Connection[Any]) -> None:
    devices = [
        ("SL-1", "streetlight", "CY-JW"),
        ("SL-2", "streetlight", "CY-CW"),
        ("HT-1", "heating", "CY-JW"),
        ("CH-1", "charger", "CY-CW"),
        ("MH-1", "manhole", "CY-SLT"),
    ]
    for device_id, kind, area in devices:
        conn.execute(
            "INSERT INTO devices (device_id, kind, area_code) VALUES (%s, %s, %s)",
            (device_id, kind, area),
        )
    t0 = datetime(2026, 1, 10, 10, tzinfo=UTC)
    for i in range(6):
        ts = t0 + timedelta(minutes=10 * i)
        conn.execute(
            "INSERT INTO streetlight_readings (device_id, ts, power_state, power_w, "
            "illuminance_level, fault) VALUES ('SL-1', %s, 'on', 90 + %s, 1.0, 'none')",
            (ts, i),
        )
        conn.execute(
            "INSERT INTO heating_readings (device_id, ts, temperature_c, humidity_pct) "
            "VALUES ('HT-1', %s, 19.5, 40)",
            (ts,),
        )
        conn.execute(
            "INSERT INTO charger_readings (device_id, ts, status, power_kw) "
            "VALUES ('CH-1', %s, 'Charging', 7)",
            (ts,),
        )
        conn.execute(
            "INSERT INTO manhole_readings (device_id, ts, tilt_deg, cover_open, water_level_cm) "
            "VALUES ('MH-1', %s, 0.5, false, 12)",
            (ts,),
        )
    rates = [
        ("streetlight", "lighting_rate", 58.0, 60.0),
        ("heating", "room_temp_compliance", 50.0, 60.0),
        ("heating", "complaint_density", 1.0, 3.0),
        ("charger", "charger_availability", 55.0, 60.0),
        ("manhole", "manhole_online", 60.0, 60.0),
    ]
    for area in ("CY-JW", "CY-CW", "CY-SLT"):
        for hour in (t0, t0 + timedelta(hours=1), datetime(2026, 2, 10, 12, tzinfo=UTC)):
            for kind, metric, num, den in rates:
                conn.execute(
                    "INSERT INTO rates_hourly (area_code, kind, metric, hour, numerator, "
                    "denominator, samples) VALUES (%s, %s, %s, %s, %s, %s, 10)",
                    (area, kind, metric, hour, num, den),
                )
    for i, (state, severity) in enumerate([("firing", "critical"), ("pending", "warning")]):
        conn.execute(
            "INSERT INTO alerts (fingerprint, rule, kind, severity, labels, summary, state, "
            "device_id, area_code, started_at, fired_at, last_seen) VALUES "
            "(%s, 'lamp_dark', 'streetlight', %s, '{}', 'lamp off at night', %s, 'SL-1', "
            "'CY-JW', %s, %s, %s)",
            (f"fp-{i}", severity, state, t0, t0 if state == "firing" else None, t0),
        )
    conn.execute(
        "INSERT INTO cases (title, source, kind, area_code, device_id, detected_at) "
        "VALUES ('lamp SL-1 dark', 'alert', 'streetlight', 'CY-JW', 'SL-1', %s)",
        (t0,),
    )
    conn.execute(
        "INSERT INTO device_state (device_id, kind, online, ts) VALUES ('SL-1', 'streetlight', "
        "true, %s)",
        (t0,),
    )
    conn.execute(
        "INSERT INTO device_status_events (device_id, ts, kind, online) VALUES "
        "('SL-1', %s, 'streetlight', false), ('SL-1', %s, 'streetlight', true)",
        (t0, t0 + timedelta(minutes=5)),
    )
    conn.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason, detail) VALUES "
        "(%s, 'cityops/v1/streetlight/X/telemetry', 'x', 'unknown device', 'X')",
        (t0,),
    )
    conn.execute(
        "INSERT INTO indicator_local (key, name_zh, direction, kind, target_2025, unit) "
        "VALUES ('local-01', '垃圾分类准确率', 'up', 'level', 90, '%')"
    )
    conn.execute(
        "INSERT INTO indicator_observations (indicator, observed_on, value, source) VALUES "
        "('local-01', '2026-01-31', 86.5, 'district statistics bureau'), "
        "('local-01', '2025-12-31', 85.0, 'district statistics bureau')"
    )


@pytest.fixture
def grafana_dsn(migrated_db: str) -> Iterator[str]:
    """DSN of the seeded test database for a Grafana login role made by the compose init script."""
    with psycopg.connect(migrated_db) as conn:
        _seed(conn)
    role = f"grafana_t_{uuid.uuid4().hex[:10]}"
    parts = conninfo_to_dict(migrated_db)
    env = {
        **os.environ,
        "POSTGRES_USER": str(parts.get("user") or "postgres"),
        "POSTGRES_DB": str(parts["dbname"]),
        "PGHOST": str(parts.get("host") or "127.0.0.1"),
        "PGPORT": str(parts.get("port") or "5432"),
        "GRAFANA_DB_PASSWORD": "t3st-pw",
        "GRAFANA_DB_USER": role,
    }
    done = subprocess.run(
        ["/bin/sh", str(DEPLOY / "db/init/10-grafana-role.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    try:
        yield make_conninfo(migrated_db, user=role, password="t3st-pw")
    finally:
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


VARIABLE_SETS = [
    VARIABLES | {"kind": kind, "device": device}
    for kind, device in (
        ("streetlight", "SL-1"),
        ("heating", "HT-1"),
        ("charger", "CH-1"),
        ("manhole", "MH-1"),
    )
]


def _check_shape(where: str, fmt: str, panel_type: str, cur: psycopg.Cursor[Any]) -> int:
    """Assert the columns fit the panel; return the number of rows."""
    rows = cur.fetchall()
    assert cur.description is not None
    cols = [(c.name, c.type_code) for c in cur.description]
    if fmt == "time_series":
        assert cols[0] == ("time", TIMESTAMPTZ), f"{where}: first column {cols[0]}"
        for name, oid in cols[1:]:
            assert (name == "metric" and oid == TEXT) or oid in NUMERIC, f"{where}: {name}"
        assert any(oid in NUMERIC for _, oid in cols[1:]), f"{where}: no value column"
    elif panel_type == "stat":
        assert cols[0][0] == "value", where
        assert cols[0][1] in NUMERIC, where
    elif panel_type == "barchart":
        assert cols[0][1] == TEXT, where
        assert all(oid in NUMERIC for _, oid in cols[1:]), where
    return len(rows)


def test_every_panel_query_runs_as_the_grafana_role(grafana_dsn: str) -> None:
    targets = _sql_targets()
    assert len(targets) >= 20
    with psycopg.connect(grafana_dsn, autocommit=True) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        for board, title, panel, target in targets:
            where = f"{board} / {title}"
            # per-kind panels of the drill-down have rows for a device of their kind only
            counts = [
                _check_shape(
                    where,
                    target["format"],
                    panel["type"],
                    conn.execute(substitute(target["rawSql"], variables)),  # type: ignore[call-overload]
                )
                for variables in VARIABLE_SETS
            ]
            assert any(counts), f"{where}: no rows for any device"
        # the template variable queries too
        for path in DASHBOARDS:
            for var in _load(path)["templating"]["list"]:
                if var["type"] == "query":
                    rows = conn.execute(substitute(var["query"])).fetchall()  # type: ignore[call-overload]
                    assert rows, f"{path.name}: variable {var['name']}"


def test_panel_values_are_the_rates_of_the_seeded_rows(grafana_dsn: str) -> None:
    """Not only shapes: the lighting rate is Σnumerator ÷ Σdenominator (58/60 = 96.67 %)."""
    board = _load(DEPLOY / "grafana/dashboards/district-overview.json")
    panel = next(p for p in board["panels"] if p["title"] == "Lighting rate (range)")
    with psycopg.connect(grafana_dsn) as conn:
        (value,) = conn.execute(substitute(panel["targets"][0]["rawSql"])).fetchone()  # type: ignore[call-overload, misc]
    assert round(float(value), 2) == 96.67
    board = _load(DEPLOY / "grafana/dashboards/monthly-indicators.json")
    panel = next(p for p in board["panels"] if p["title"].startswith("Indicators per month"))
    with psycopg.connect(grafana_dsn) as conn:
        rows = conn.execute(substitute(panel["targets"][0]["rawSql"])).fetchall()  # type: ignore[call-overload]
    lighting = [r for r in rows if r[1].startswith("城市道路亮灯率")]
    assert len(lighting) == 2  # January and February (Asia/Shanghai months)
    assert all(r[4] is False for r in lighting)  # 96.67 % is below the 99 % target
    density = [r for r in rows if r[1].startswith("万平方米供热投诉量")]
    assert all(r[4] is True for r in density)  # 0.333 <= 0.621

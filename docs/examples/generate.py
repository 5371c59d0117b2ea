"""Regenerate the committed samples in docs/examples/ (one command; see README.md there).

    python docs/examples/generate.py [--dsn postgresql://postgres@127.0.0.1:5432/cityops_examples]

It (re)creates a scratch database, loads the reference areas and a small simulated district
(300 devices, seed 14), replays a simulated June 2023 into the readings tables, records the
registry history in ``registry-history.csv``, imports the made-up observations and forecasts
(``observations.csv``, ``forecasts.csv``) and writes:

- ``monthly-2023-06/``: the monthly report for June 2023 as JSON, XLSX and PDF (charts included;
  PDF needs chromium, ``CITYOPS_CHROMIUM`` names it);
- ``evaluation-2023-07-02.json`` and ``evaluation-2023-07-02.md``: the district plan (cy-gov)
  evaluated as of 2023-07-02 (time share exactly 50 %), every row with its rule and inputs;
- ``refused-import.txt``: what the import says about a yes/no indicator given 87.5.

The same inputs give byte-identical JSON and Markdown (the report's ``generated_at`` is pinned);
the XLSX and PDF also embed the time they were written. The scratch database is dropped at the
end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, so its packages are imported

from cityops import catalog as device_catalog  # noqa: E402
from cityops import registry  # noqa: E402
from cityops.catalog import Kind  # noqa: E402
from cityops.db import migrate  # noqa: E402
from cityops.errors import ValidationError  # noqa: E402
from cityops.settings import DatabaseSettings, Settings, StorageSettings  # noqa: E402
from reports import formats, monthly, observations  # noqa: E402
from reports.evaluation import Forecast  # noqa: E402
from simulators import scenario  # noqa: E402
from simulators.engine import Simulation  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/cityops_examples"
MONTH = "2023-06"
SIM_START = datetime(2023, 5, 31, 16, tzinfo=UTC)  # 2023-06-01 00:00 Asia/Shanghai
SIM_DAYS = 30
AS_OF = date(2023, 7, 2)  # time share exactly 50 %
PINNED_NOW = datetime(2023, 7, 3, tzinfo=UTC)
DEVICES = 300
SEED = 14
TICK_S = 900


def _recreate(dsn: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    name = str(info["dbname"])
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop(dsn: str) -> None:
    name = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _ts(value: int | str) -> datetime:
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _simulate(conn: psycopg.Connection[Any], scn: Any) -> dict[str, int]:
    """Replay the simulated month into the readings and complaints tables (as ingest stores)."""
    sim = Simulation(
        scn,
        start=SIM_START,
        duration=timedelta(days=SIM_DAYS),
        tick_s=TICK_S,
        fault_rate=0.05,
    )
    names = {k: [f.name for f in device_catalog.KINDS[k].readings] for k in Kind}
    buffers: dict[Kind, list[tuple[Any, ...]]] = {k: [] for k in Kind}
    complaints: list[dict[str, Any]] = []
    for out in sim.ticks():
        for r in out.readings:
            values = device_catalog.KINDS[r.kind].validate_values(r.values)
            buffers[r.kind].append(
                (r.device_id, _ts(r.ts), *[values.get(n) for n in names[r.kind]])
            )
        complaints.extend(out.complaints)
    counts = {}
    with conn.cursor() as cur:
        for kind, rows in buffers.items():
            table = device_catalog.KINDS[kind].table
            cols = sql.SQL(", ").join(sql.Identifier(c) for c in ["device_id", "ts", *names[kind]])
            with cur.copy(
                sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), cols)
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            counts[kind.value] = len(rows)
        for c in complaints:
            cur.execute(
                "INSERT INTO complaints (complaint_id, received_at, category, area_code, address,"
                " lat, lon, device_id, text, status, source) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, 'simulator') ON CONFLICT DO NOTHING",
                (
                    c["complaint_id"],
                    _ts(c["received_at"]),
                    c["category"],
                    c.get("area_code"),
                    c.get("address"),
                    c.get("lat"),
                    c.get("lon"),
                    c.get("device_id"),
                    c.get("text"),
                    c.get("status", "received"),
                ),
            )
    counts["complaints"] = len(complaints)
    conn.commit()
    return counts


def _forecasts(conn: psycopg.Connection[Any], cat: Any) -> None:
    text = (HERE / "forecasts.csv").read_text(encoding="utf-8")
    for row in csv.DictReader(io.StringIO(text)):
        observations.save_forecast(
            conn,
            cat,
            Forecast(
                indicator=row["indicator"],
                made_on=date.fromisoformat(row["made_on"]),
                value=float(row["value"]),
                reason=row["reason"],
                proposed_target=float(row["proposed_target"]) if row["proposed_target"] else None,
            ),
            "docs/examples",
        )


def _refused(cat: Any) -> str:
    bad = (
        "indicator,observed_on,value,status,source,note,scope\n"
        "cy-gov-09,2023-06-30,18.2,,区城管委,,district\n"
        "cy-gov-02,2023-06-30,87.5,,区城管执法局,,district\n"
    )
    try:
        observations.parse_observations_csv(cat, bad)
    except ValidationError as err:
        return f"$ cityops indicators import-observations bad.csv\n{bad}\n-> {err}\n"
    raise SystemExit("the bad yes/no value was accepted: the sample would be wrong")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _markdown(section: dict[str, Any]) -> str:
    lines = [
        f"# District plan (cy-gov) evaluated as of {section['as_of']} "
        f"(time share {section['time_share']:.1%})",
        "",
        "Generated by `python docs/examples/generate.py` from the made-up observations in "
        "`observations.csv` and forecasts in `forecasts.csv`; catalog "
        f"`{section['catalog_version']}`. Rule parameters: "
        + ", ".join(f"{k} = {v}" for k, v in section["rules"]["parameters"].items())
        + ". The JSON beside this file has every rule's inputs.",
        "",
        "| no | indicator | rule | current | target | status | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in section["rows"]:
        target = "无目标值 no target" if r["no_target"] else _fmt(r["target"])
        status = f"{r['report_zh']} {r['status_en']}" + (" (at risk)" if r["at_risk"] else "")
        reason = r["reason"].replace("|", "\\|")
        lines.append(
            f"| {r['no']} | {r['name_zh']} {r['name_en']} | `{r['rule']}` | "
            f"{_fmt(r['current'])} | {target} | {status} | {reason} |"
        )
    lines += [
        "",
        "Counts (total): " + ", ".join(f"{k} {v}" for k, v in section["counts"]["total"].items()),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Build the scratch database and write every sample."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="scratch database (recreated)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    dsn: str = args.dsn
    settings = Settings(db=DatabaseSettings(dsn=dsn), storage=StorageSettings(timescaledb="off"))
    _recreate(dsn)
    try:
        with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:
            migrate.migrate(conn, settings.storage)
        with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
            registry.import_areas(conn, registry.reference_area_records(), "reference")
            scn = scenario.generate(scenario.scenario_spec("district", DEVICES), SEED)
            got = registry.import_devices(conn, list(scenario.registry_records(scn)), "scenario")
            assert not got.errors, got.errors  # noqa: S101 - a script: stop loudly
            history = registry.import_events(
                conn, list(registry.read_records(HERE / "registry-history.csv")), "history"
            )
            assert not history.errors, history.errors  # noqa: S101
            conn.commit()
            counts = _simulate(conn, scn)
            print(f"simulated {MONTH}: {counts}")
            cat = observations.load_catalog(conn)
            observations.import_observations(
                conn, cat, (HERE / "observations.csv").read_text(encoding="utf-8"), "examples"
            )
            _forecasts(conn, cat)
            conn.commit()
            # No rates were computed: the report finds them missing and recomputes them first.
            report = monthly.build(conn, settings, MONTH, now=PINNED_NOW)
            conn.commit()
            section = monthly.evaluate_stored(conn, AS_OF, "cy-gov", monthly.rules_from(settings))
        out = HERE / f"monthly-{MONTH}"
        out.mkdir(exist_ok=True)
        for fmt in (formats.Format.JSON, formats.Format.XLSX, formats.Format.PDF):
            path = out / formats.file_name(report, fmt)
            path.write_bytes(formats.render(report, fmt))
            print(f"wrote {path.relative_to(HERE)}")
        (HERE / "evaluation-2023-07-02.json").write_bytes(
            orjson.dumps(section, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
        )
        (HERE / "evaluation-2023-07-02.md").write_text(_markdown(section), encoding="utf-8")
        (HERE / "refused-import.txt").write_text(_refused(cat), encoding="utf-8")
        print("wrote evaluation-2023-07-02.json, evaluation-2023-07-02.md, refused-import.txt")
    finally:
        if not args.keep:
            _drop(dsn)


if __name__ == "__main__":
    main()

"""Machine formats of the monthly report: canonical JSON and a long-format CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

# Sections rendered as rows; the key fields name a row, every other field becomes one CSV line.
SECTIONS = ("rates", "radius", "cases", "hotline", "manhole_alarms", "coverage")
CSV_HEADER = ("section", "scope", "level", "item", "field", "value")


def to_json(report: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, two-space indent): same data, same bytes."""
    return orjson.dumps(report, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return str(value)


def to_csv(report: dict[str, Any]) -> bytes:
    """One line per (section, scope, item, field): easy to load into a spreadsheet or database."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for name in ("month", "catalog_version", "generated_at"):
        w.writerow(
            ("meta", report["scope"]["code"], report["scope"]["level"], "", name, report[name])
        )
    meta = {
        "provisional": report.get("provisional"),
        **(report.get("completeness") or {}),
    }
    for name, value in meta.items():
        w.writerow(
            ("meta", report["scope"]["code"], report["scope"]["level"], "", name, _cell(value))
        )
    for section in SECTIONS:
        for row in report[section]:
            item = row.get("metric") or row.get("kind") or ""
            for field, value in row.items():
                if field in ("scope", "level", "metric", "kind"):
                    continue
                w.writerow(
                    (section, row.get("scope", ""), row.get("level", ""), item, field, _cell(value))
                )
    for metric, points in report["trends"].items():
        for p in points:
            w.writerow(
                (
                    "trends",
                    report["scope"]["district"],
                    "district",
                    metric,
                    p["month"],
                    _cell(p["value"]),
                )
            )
    for row in report["evaluation"]["rows"]:
        for field, value in row.items():
            if field != "key":
                w.writerow(("evaluation", "district", "district", row["key"], field, _cell(value)))
    return buf.getvalue().encode("utf-8")

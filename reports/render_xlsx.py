"""The monthly report as an XLSX workbook: one sheet per section, real numbers with formats."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import orjson
from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

PCT = "0.00%"
PCT_CHANGE = "+0.00%;-0.00%;0.00%"
NUM = "0.000"
INT = "0"
SHARE = "0.0%"


def _sheet(
    wb: Workbook,
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    formats: Sequence[str | None],
) -> Worksheet:
    ws: Worksheet = wb.create_sheet(title)
    ws.append(list(header))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in rows:
        ws.append(list(row))
        for col, fmt in enumerate(formats, start=1):
            if fmt is not None:
                ws.cell(row=ws.max_row, column=col).number_format = fmt
    for col, name in enumerate(header, start=1):
        width = max(
            [len(str(name))] + [len(str(r[col - 1])) for r in rows if r[col - 1] is not None]
        )
        ws.column_dimensions[get_column_letter(col)].width = min(60, width + 2)
    ws.freeze_panes = "A2"
    return ws


def _names(report: dict[str, Any]) -> dict[str, str]:
    names = {a["code"]: a["name_zh"] for a in report["scope"]["areas"]}
    names[report["scope"]["district"]] = report["scope"]["district"]
    return names


def to_xlsx(report: dict[str, Any]) -> bytes:
    """Sheets: Summary, Rates, Ranking, Radius, Cases, Hotline, Manhole, Coverage, Evaluation,
    Counts, Definitions, Parameters."""
    wb = Workbook()
    summary = wb.active
    assert summary is not None  # noqa: S101 - a new workbook always has one sheet
    summary.title = "Summary"
    for item in (
        ("Report 报告", "Monthly operations report 月度运行报告"),
        ("Month 月份", report["month"]),
        ("Scope 范围", f"{report['scope']['level']} {report['scope']['code']}"),
        ("Period (UTC)", f"{report['period']['start']} – {report['period']['end']}"),
        ("Time zone", report["period"]["timezone"]),
        ("Catalog version 指标目录版本", report["catalog_version"]),
        ("Generated at", report["generated_at"]),
        (
            "Provisional 数据待更新",
            "yes: figures from stale or missing hourly rates are marked provisional ("
            + ", ".join(report.get("freshness", {}).get("provisional_windows", []))
            + ")"
            if report.get("provisional")
            else "no (hourly rates checked fresh)",
        ),
        ("Completeness 完整性", (report.get("completeness") or {}).get("note", "")),
        ("No data 无数据", (report.get("completeness") or {}).get("no_data_note") or "no"),
    ):
        summary.append(list(item))
    summary.column_dimensions["A"].width = 30
    summary.column_dimensions["B"].width = 60
    names = _names(report)
    defs = report["definitions"]

    rate_rows = []
    rate_fmts: list[list[str | None]] = []
    for r in report["rates"]:
        ratio = defs[r["metric"]]["unit"] == "ratio"
        v, ch = (PCT, PCT_CHANGE) if ratio else (NUM, "+0.000;-0.000;0.000")
        rate_rows.append(
            [
                r["metric"],
                defs[r["metric"]]["name_zh"],
                r["scope"],
                names.get(r["scope"], r["scope"]),
                r["value"],
                r["prev_month"],
                r["mom_change"],
                r["prev_year"],
                r["yoy_change"],
                r["numerator"],
                r["denominator"],
                r["coverage"],
                r["rank"],
                r.get("vs_2020"),
                defs[r["metric"]]["unit"],
                "provisional" if r.get("provisional") else "",
            ]
        )
        rate_fmts.append(
            [None, None, None, None, v, v, ch, v, ch, NUM, NUM, PCT, INT, PCT_CHANGE, None, None]
        )
    ws = _sheet(
        wb,
        "Rates",
        [
            "metric",
            "指标",
            "scope",
            "名称",
            "value",
            "prev month",
            "MoM change",
            "same month last year",
            "YoY change",
            "Σ numerator",
            "Σ denominator",
            "data coverage",
            "rank",
            "vs 2020 baseline",
            "unit",
            "provisional",
        ],
        rate_rows,
        [None] * 16,
    )
    for i, fmts in enumerate(rate_fmts, start=2):
        for col, fmt in enumerate(fmts, start=1):
            if fmt is not None:
                ws.cell(row=i, column=col).number_format = fmt

    ranked = [r for r in report["rates"] if r["rank"] is not None]
    ranked.sort(key=lambda r: (r["metric"], r["rank"], r["scope"]))
    ws = _sheet(
        wb,
        "Ranking",
        ["metric", "rank 排名", "scope", "名称", "value", "of", "tied 并列"],
        [
            [
                r["metric"],
                r["rank"],
                r["scope"],
                names.get(r["scope"], r["scope"]),
                r["value"],
                r["ranked"],
                "tied" if r.get("tied") else "",
            ]
            for r in ranked
        ],
        [None, INT, None, None, None, INT, None],
    )
    for i, r in enumerate(ranked, start=2):
        ws.cell(row=i, column=5).number_format = (
            PCT if defs[r["metric"]]["unit"] == "ratio" else NUM
        )

    _sheet(
        wb,
        "Radius",
        [
            "scope",
            "public sites",
            "connectors",
            "area-equivalent radius km",
            "effective radius km",
            "grid cells",
        ],
        [
            [
                r["scope"],
                r["public_sites"],
                r["connectors_in_service"],
                r["equivalent_radius_km"],
                r["effective_radius_km"],
                r["grid_cells"],
            ]
            for r in report["radius"]
        ],
        [None, INT, INT, NUM, NUM, INT],
    )
    _sheet(
        wb,
        "Cases",
        [
            "scope",
            "cases",
            "closed",
            "closure rate",
            "proactive 未诉先办",
            "proactive share",
            "mean closure h",
            "median closure h",
            "mean dispatch h",
        ],
        [
            [
                r["scope"],
                r["cases"],
                r["closed"],
                r["closure_rate"],
                r["proactive"],
                r["proactive_share"],
                r["mean_closure_h"],
                r["median_closure_h"],
                r["mean_dispatch_h"],
            ]
            for r in report["cases"]
        ],
        [None, INT, INT, PCT, INT, PCT, NUM, NUM, NUM],
    )
    _sheet(
        wb,
        "Hotline",
        [
            "scope",
            "complaints",
            "responded",
            "response rate",
            "resolved",
            "resolution rate",
            "by category",
        ],
        [
            [
                r["scope"],
                r["complaints"],
                r["responded"],
                r["response_rate"],
                r["resolved"],
                r["resolution_rate"],
                ", ".join(f"{k} {v}" for k, v in r["by_category"].items()),
            ]
            for r in report["hotline"]
        ],
        [None, INT, INT, PCT, INT, PCT, None],
    )
    _sheet(
        wb,
        "Manhole",
        [
            "scope",
            "alarms",
            "acknowledged",
            "mean ack min",
            "repeat within 7 d",
            "with case",
            "closed within SLA",
            "SLA share",
        ],
        [
            [
                r["scope"],
                r["alarms"],
                r["acknowledged"],
                r["mean_ack_min"],
                r["repeat_within_7d"],
                r["with_case"],
                r["closed_within_sla"],
                r["sla_share"],
            ]
            for r in report["manhole_alarms"]
        ],
        [None, INT, INT, NUM, INT, INT, INT, PCT],
    )
    _sheet(
        wb,
        "Coverage",
        [
            "kind",
            "devices in service",
            "areas with devices",
            "area-hours expected",
            "area-hours present",
            "area-hours share",
            "coverage metric",
            "data coverage",
        ],
        [
            [
                r["kind"],
                r["devices_in_service"],
                r["areas_with_devices"],
                r["area_hours_expected"],
                r["area_hours_present"],
                r["area_hours_share"],
                r["coverage_metric"],
                r["data_coverage"],
            ]
            for r in report["coverage"]
        ],
        [None, INT, INT, INT, INT, PCT, None, PCT],
    )
    e = report["evaluation"]
    _sheet(
        wb,
        "Evaluation",
        [
            "key",
            "指标",
            "indicator",
            "unit",
            "attribute",
            "kind",
            "direction",
            "baseline",
            "target",
            "current",
            "as of",
            "source",
            "task share",
            "time share",
            "forecast",
            "forecast from",
            "proposed target",
            "评估",
            "status",
            "预期",
            "pace",
            "at risk",
            "reason",
            "rule 规则",
            "rule inputs (JSON)",
            "no target",
            "status from",
            "sensor value",
            "entered value used",
            "sensor vs entered disagree",
            "provisional",
        ],
        [
            [
                r["key"],
                r["name_zh"],
                r["name_en"],
                r["unit"],
                r["attribute"],
                r["kind"],
                r["direction"],
                r["baseline"],
                r["target"],
                r["current"],
                r["current_on"],
                r["current_source"],
                r["task_share"],
                r["time_share"],
                r["forecast"],
                r["forecast_source"],
                r["proposed_target"],
                r["report_zh"],
                r["status_en"],
                r["pace_zh"],
                r["pace_en"],
                r["at_risk"],
                r["reason"],
                f"{r.get('rule', '')}: {r.get('rule_text', '')}",
                orjson.dumps(r.get("inputs", {}), option=orjson.OPT_SORT_KEYS).decode(),
                r.get("no_target", False),
                r.get("status_source"),
                (r.get("sensor_check") or {}).get("sensor_value"),
                (r.get("sensor_check") or {}).get("entered_value"),
                (r.get("sensor_check") or {}).get("disagrees"),
                r.get("provisional", False),
            ]
            for r in e["rows"]
        ],
        [
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            "0.####",
            "0.####",
            "0.####",
            None,
            None,
            SHARE,
            SHARE,
            "0.####",
            None,
            "0.####",
            None,
            None,
            None,
            None,
            None,
            None,
        ],
    )
    statuses = list(next(iter(e["counts"].values())).keys())
    paces = list(next(iter(e["pace_counts"].values())).keys())
    _sheet(
        wb,
        "Counts",
        ["attribute", *statuses, *paces],
        [
            [
                attr,
                *[e["counts"][attr][s] for s in statuses],
                *[e["pace_counts"][attr][p] for p in paces],
            ]
            for attr in e["counts"]
        ],
        [None] + [INT] * (len(statuses) + len(paces)),
    )
    _sheet(
        wb,
        "Definitions",
        ["metric", "名称", "name", "unit", "better", "numerator", "denominator", "coverage"],
        [
            [
                k,
                d["name_zh"],
                d["name_en"],
                d["unit"],
                d["better"],
                d["numerator"],
                d["denominator"],
                d["coverage_metric"],
            ]
            for k, d in defs.items()
        ],
        [None] * 8,
    )
    params = [
        [group, k, str(v)] for group, vals in report["parameters"].items() for k, v in vals.items()
    ]
    _sheet(wb, "Parameters", ["group", "name", "value"], params, [None] * 3)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()

"""The monthly report as print-ready HTML with inline SVG charts, and as PDF through chromium.

Charts come from ``reports.charts`` (matplotlib, SVG with text kept as text): indicator trends
against their target lines and ranking bars of the streets/townships. The HTML embeds a subset of
the machine's CJK font (``reports.fonts``), so the page and the PDF, which is the same HTML
printed by headless chromium, draw the Chinese names alike. A month still running when the report
was generated is marked as in progress wherever its values and ranks appear.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cityops.errors import CityopsError
from reports import charts, fonts

# Target lines drawn on the trend and ranking charts (fractions for ratio metrics).
TREND_TARGETS: dict[str, tuple[float, str]] = {
    "lighting_rate": (0.99, "target 99% (cy-gov-05)"),
    "complaint_density": (0.621, "target 0.621 = 0.69 × (1 − 10%) (cy-gov-25)"),
}
FONT_STACK = (
    f'"{fonts.EMBEDDED_FAMILY}", "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", '
    '"PingFang SC", sans-serif'
)
RANK_METRICS = (
    "lighting_rate",
    "room_temp_compliance",
    "complaint_density",
    "charger_availability",
)

CSS = """
body { font-family: FONT_STACK;
       margin: 24px; color: #222; font-size: 12px; }
svg.chart text { font-family: FONT_STACK !important; }
.charts { display: grid; grid-template-columns: repeat(2, max-content); gap: 10px 18px; }
.charts svg { display: block; }
.rankings { page-break-before: always; }
.notice { border: 1px solid #e0a800; background: #fff6d6; padding: 4px 8px; margin: 6px 0; }
h1 { font-size: 20px; } h2 { font-size: 16px; border-bottom: 1px solid #999; margin-top: 24px; }
p.provisional { background: #fff3cd; border: 1px solid #e0c36c; padding: 6px; }
.nw { white-space: nowrap; } div.wide { min-width: 18em; } div.small { font-size: 9px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; } td.t { text-align: left; }
.achieved_early { background: #d4f4d4; } .on_track { background: #eef8ee; }
.adjust { background: #fbd9d3; } .no_target, .pending { background: #f3f3f3; }
@media print { h2 { page-break-after: avoid; } table, svg { page-break-inside: avoid; } }
@page { size: A4 landscape; margin: 12mm; }
""".replace("FONT_STACK", FONT_STACK)


class RenderError(CityopsError):
    """A report format could not be produced (e.g. no chromium for PDF)."""


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value * 100:.2f}%" if unit == "ratio" else f"{value:.4g}"
    return escape(str(value))


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes else ""
        cells = "".join(
            f'<td class="t">{c}</td>' if j == 0 else f"<td>{c}</td>" for j, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _provisional_note(report: dict[str, Any]) -> str:
    """A banner naming the stale windows when figures are provisional (empty otherwise)."""
    if not report.get("provisional"):
        return ""
    windows = ", ".join(report.get("freshness", {}).get("provisional_windows", []))
    return (
        '<p class="provisional"><b>Provisional 数据待更新:</b> hourly rates were missing or older '
        f"than their readings ({escape(windows)}); the figures marked provisional may change "
        "after <code>cityops rates recompute</code>.</p>"
    )


# Inputs the evaluation table already shows in its own columns (the JSON/XLSX carry them all).
RULE_CELL_SKIP = frozenset(
    {
        "as_of",
        "direction",
        "current_source",
        "current_on",
        "user_forecast",
        "authority",
        "target",
        "current",
        "baseline",
        "time_share",
        "task_share",
        "forecast",
        "forecast_source",
        "gap_unit",
    }
)


def _completeness_note(report: dict[str, Any]) -> str:
    """A line saying the month has no data at all (empty otherwise).

    A month in progress is said once, by ``_progress_notice``; only when its progress cannot be
    worked out (no period or generation time in the report) does the completeness note say it.
    """
    c = report.get("completeness") or {}
    notes = [c["note"]] if c.get("partial") and month_progress(report) is None else []
    if c.get("no_data_note"):
        notes.append(c["no_data_note"])
    return "".join(f'<p class="provisional"><b>{escape(n)}</b></p>' for n in notes)


def _rule_cell(r: dict[str, Any]) -> str:
    """The rule's name and its inputs, compact enough for a table cell."""
    inputs = r.get("inputs") or {}
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in inputs.items()
        if k not in RULE_CELL_SKIP and v is not None and not isinstance(v, dict | list)
    )
    return f'<div class="small"><b>{escape(str(r.get("rule", "")))}</b><br>{escape(shown)}</div>'


def _sensor_cell(check: dict[str, Any] | None) -> str:
    """Sensor-derived value beside the entered one, with the disagreement flag."""
    if not check:
        return ""
    text = f"sensor {_fmt(check['sensor_value'])}"
    if check.get("entered_value") is not None:
        text += f"; entered {_fmt(check['entered_value'])} (used)"
        if check.get("disagrees"):
            text += " — DISAGREE 不一致"
    return escape(text)


def to_html(report: dict[str, Any]) -> bytes:
    """The whole report as one self-contained HTML page."""
    defs = report["definitions"]
    scope = report["scope"]
    names = {a["code"]: a["name_zh"] for a in scope["areas"]}
    progress = month_progress(report)
    running = report["month"] if progress else None
    font = fonts.find_cjk_font()
    out = [
        f"<h1>城市运行月度报告 Monthly operations report — {escape(report['month'])}, "
        f"{escape(scope['level'])} {escape(scope['code'])}</h1>",
        f"<p>Catalog version {escape(report['catalog_version'])} · period "
        f"{escape(report['period']['start'])} – {escape(report['period']['end'])} (UTC; months are "
        f"{escape(report['period']['timezone'])} calendar months) · generated "
        f"{escape(report['generated_at'])}</p>",
        _provisional_note(report),
        _completeness_note(report),
    ]
    if progress:
        out.append(_progress_notice(progress, (report.get("completeness") or {}).get("as_of")))
    if font is None:
        out.append(
            '<p class="notice">No CJK font on the machine that rendered this report: Chinese '
            f"names may show as empty boxes ({escape(fonts.INSTALL_HINT)}).</p>"
        )
    out.append('<h2>Trends against targets 指标趋势</h2><div class="charts">')
    for metric, points in report["trends"].items():
        d = defs[metric]
        out.append(
            charts.trend_chart(
                f"{d['name_zh']} {d['name_en']}",
                points,
                ratio=d["unit"] == "ratio",
                target=_target(metric),
                in_progress=running,
                coverage=_district_coverage(report, metric),
            )
        )
    out.append(
        '</div><div class="rankings"><h2>Rankings of streets/townships 街乡排名 — '
        f"{escape(report['month'])}</h2>"
    )
    # (a month in progress is said in each ranking's title: a notice here would push the
    # 43-bar charts off the page)
    out.append('<div class="charts">')
    highlight = names.get(scope["code"]) if scope["level"] == "area" else None
    for metric in RANK_METRICS:
        d = defs[metric]
        rows = sorted(
            (r for r in report["rates"] if r["metric"] == metric and r["rank"]),
            key=lambda r: r["rank"],
        )
        bars = [
            charts.Bar(
                name=names.get(r["scope"], r["scope"]),
                value=r["value"],
                rank=r["rank"],
                coverage=r.get("coverage"),
                tied=bool(r.get("tied")),
            )
            for r in rows
            if r["value"] is not None
        ]
        ranked = rows[0]["ranked"] if rows and "ranked" in rows[0] else len(bars)
        out.append(
            charts.ranking_chart(
                f"{d['name_zh']} ({ranked} ranked)\n{d['name_en']}",
                bars,
                ratio=d["unit"] == "ratio",
                target=_target(metric),
                highlight=highlight,
                in_progress=f"ranks provisional: {progress}" if progress else None,
            )
        )
    out.append("</div></div>")
    rates_title = "Rates 运行指标"
    if progress:
        rates_title += " (month in progress: provisional; see coverage)"
    out.append(f"<h2>{escape(rates_title)}</h2>")
    out.append(
        _table(
            [
                "metric",
                "scope",
                "value",
                "prev month",
                "MoM",
                "last year",
                "YoY",
                "coverage",
                "rank",
                "vs 2020",
            ],
            [
                [
                    escape(defs[r["metric"]]["name_zh"]),
                    escape(names.get(r["scope"], r["scope"])),
                    _fmt(r["value"], defs[r["metric"]]["unit"])
                    + (" (provisional 待更新)" if r.get("provisional") else ""),
                    _fmt(r["prev_month"], defs[r["metric"]]["unit"]),
                    _fmt(r["mom_change"], defs[r["metric"]]["unit"]),
                    _fmt(r["prev_year"], defs[r["metric"]]["unit"]),
                    _fmt(r["yoy_change"], defs[r["metric"]]["unit"]),
                    _fmt(r["coverage"], "ratio"),
                    _fmt(r["rank"]) + ("=" if r.get("tied") else ""),
                    _fmt(r.get("vs_2020"), "ratio"),
                ]
                for r in report["rates"]
                if r["level"] == "district"
                or scope["level"] == "area"
                or r["metric"] in RANK_METRICS
            ],
        )
    )
    out.append("<h2>Charging service radius 充电服务半径</h2>")
    out.append(
        _table(
            ["scope", "public sites", "connectors", "area-equivalent km", "effective km"],
            [
                [
                    escape(names.get(r["scope"], r["scope"])),
                    _fmt(r["public_sites"]),
                    _fmt(r["connectors_in_service"]),
                    _fmt(r["equivalent_radius_km"]),
                    _fmt(r["effective_radius_km"]),
                ]
                for r in report["radius"]
            ],
        )
    )
    out.append("<h2>Cases and hotline 案件与热线</h2>")
    out.append(
        _table(
            [
                "scope",
                "cases",
                "closed",
                "closure rate",
                "proactive share 未诉先办",
                "mean closure h",
            ],
            [
                [
                    escape(names.get(r["scope"], r["scope"])),
                    _fmt(r["cases"]),
                    _fmt(r["closed"]),
                    _fmt(r["closure_rate"], "ratio"),
                    _fmt(r["proactive_share"], "ratio"),
                    _fmt(r["mean_closure_h"]),
                ]
                for r in report["cases"]
            ],
        )
    )
    out.append(
        _table(
            ["scope", "complaints", "response rate", "resolution rate"],
            [
                [
                    escape(names.get(r["scope"], r["scope"])),
                    _fmt(r["complaints"]),
                    _fmt(r["response_rate"], "ratio"),
                    _fmt(r["resolution_rate"], "ratio"),
                ]
                for r in report["hotline"]
            ],
        )
    )
    out.append("<h2>Manhole alarms 井盖报警</h2>")
    out.append(
        _table(
            ["scope", "alarms", "acknowledged", "mean ack min", "repeat ≤7 d", "SLA share"],
            [
                [
                    escape(names.get(r["scope"], r["scope"])),
                    _fmt(r["alarms"]),
                    _fmt(r["acknowledged"]),
                    _fmt(r["mean_ack_min"]),
                    _fmt(r["repeat_within_7d"]),
                    _fmt(r["sla_share"], "ratio"),
                ]
                for r in report["manhole_alarms"]
            ],
        )
    )
    out.append("<h2>Data coverage 数据覆盖</h2>")
    out.append(
        _table(
            ["kind", "devices", "area-hours present/expected", "data coverage"],
            [
                [
                    escape(r["kind"]),
                    _fmt(r["devices_in_service"]),
                    f"{r['area_hours_present']}/{r['area_hours_expected']}",
                    _fmt(r["data_coverage"], "ratio"),
                ]
                for r in report["coverage"]
            ],
        )
    )
    e = report["evaluation"]
    out.append(
        f"<h2>Plan evaluation 规划指标评估 (as of {escape(e['as_of'])}, time share "
        f"{e['time_share'] * 100:.1f}%)</h2>"
    )
    out.append(
        _table(
            ["attribute", *e["counts"]["total"].keys(), *e["pace_counts"]["total"].keys()],
            [
                [
                    escape(a),
                    *[str(v) for v in e["counts"][a].values()],
                    *[str(v) for v in e["pace_counts"][a].values()],
                ]
                for a in e["counts"]
            ],
        )
    )
    out.append(
        _table(
            [
                "indicator",
                "attribute",
                "baseline",
                "target",
                "current",
                "task share",
                "time share",
                "forecast",
                "proposed",
                "评估",
                "预期",
                "reason",
                "rule and inputs 规则与输入",
                "sensor vs entered",
            ],
            [
                [
                    escape(f"{r['key']} {r['name_zh']}"),
                    escape(r["attribute"]),
                    _fmt(r["baseline"]),
                    _fmt(r["target"]),
                    _fmt(r["current"]),
                    _fmt(r["task_share"], "ratio"),
                    _fmt(r["time_share"], "ratio"),
                    _fmt(r["forecast"]),
                    _fmt(r["proposed_target"]),
                    f'<span class="nw">{escape(r["report_zh"])}</span>',
                    f'<span class="nw">{escape(r["pace_zh"])}</span>',
                    '<div class="wide">'
                    + escape(r["reason"])
                    + (" (provisional 待更新)" if r.get("provisional") else "")
                    + "</div>",
                    _rule_cell(r),
                    _sensor_cell(r.get("sensor_check")),
                ]
                for r in e["rows"]
            ],
            [r["status"] for r in e["rows"]],
        )
    )
    out.append("<h2>Definitions 口径</h2>")
    out.append(
        _table(
            ["metric", "name", "numerator", "denominator", "unit"],
            [
                [
                    escape(k),
                    escape(f"{d['name_zh']} {d['name_en']}"),
                    escape(d["numerator"]),
                    escape(d["denominator"]),
                    escape(d["unit"]),
                ]
                for k, d in defs.items()
            ],
        )
    )
    body = "".join(out)
    title = f"月度运行报告 {escape(report['month'])} {escape(scope['code'])}"
    face = fonts.font_face_css(font, title + body) if font else ""
    head = (
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{face}\n{CSS}</style></head><body>"
    )
    return (head + body + "</body></html>\n").encode("utf-8")


def _district_coverage(report: dict[str, Any], metric: str) -> float | None:
    """The month's district coverage of ``metric`` (the trends are district values)."""
    for r in report["rates"]:
        if r["metric"] == metric and r["level"] == "district":
            return r.get("coverage")  # type: ignore[no-any-return]
    return None


def _target(metric: str) -> charts.Target | None:
    t = TREND_TARGETS.get(metric)
    return charts.Target(value=t[0], label=t[1]) if t else None


def _progress_notice(progress: str, as_of: str | None = None) -> str:
    """The one notice of a month in progress (with the evaluation's as-of day when known)."""
    evaluated = (
        f" The plan evaluation is as of the last complete day, {escape(as_of)}." if as_of else ""
    )
    return (
        f'<p class="notice">本月尚未结束 · {escape(progress)}. Values, changes and ranks are '
        "provisional; the coverage beside each value says how much of the expected data they "
        f"rest on.{evaluated}</p>"
    )


def month_progress(report: dict[str, Any]) -> str | None:
    """How far the report's month had run when the report was generated; None once it is over.

    E.g. ``month in progress: data to 2026-10-17 14:00 (Asia/Shanghai), 54% of the month``.
    A report that carries ``completeness`` (reports.monthly) is in progress exactly when that
    says ``partial``, so the notice and the completeness note never disagree.
    """
    completeness = report.get("completeness")
    if isinstance(completeness, dict) and "partial" in completeness and not completeness["partial"]:
        return None
    period = report.get("period", {})
    try:
        start = datetime.fromisoformat(period["start"])
        end = datetime.fromisoformat(period["end"])
        generated = datetime.fromisoformat(report["generated_at"])
        zone = ZoneInfo(period["timezone"])
    except (KeyError, TypeError, ValueError):
        return None
    if generated >= end:
        return None
    share = min(1.0, max(0.0, (generated - start) / (end - start)))
    local = generated.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    return (
        f"month in progress: data to {local} ({period['timezone']}), "
        f"{share * 100:.0f}% of the month"
    )


def find_chromium() -> str | None:
    """Path of a chromium/chrome binary (``CITYOPS_CHROMIUM`` overrides), or None."""
    given = os.environ.get("CITYOPS_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def to_pdf(html: bytes, timeout_s: float = 120.0) -> bytes:
    """Print the HTML to PDF with headless chromium; RenderError when that is not possible."""
    binary = find_chromium()
    if binary is None:
        raise RenderError(
            "PDF needs chromium (install it or set CITYOPS_CHROMIUM); "
            "the html format is the same report, print-ready"
        )
    with tempfile.TemporaryDirectory(prefix="cityops-report-") as tmp:
        src, dst = Path(tmp, "report.html"), Path(tmp, "report.pdf")
        src.write_bytes(html)
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",  # we may run as root in containers
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--user-data-dir={tmp}/profile",
            f"--print-to-pdf={dst}",
            src.as_uri(),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RenderError(f"chromium could not print the report: {err}") from err
        if done.returncode != 0 or not dst.exists() or not dst.read_bytes().startswith(b"%PDF"):
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise RenderError(f"chromium could not print the report: {tail[0]}")
        return dst.read_bytes()

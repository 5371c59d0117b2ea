"""The monthly report as print-ready HTML with inline SVG charts, and as PDF through chromium.

Charts are hand-drawn SVG (no plotting dependency): indicator trends against their target lines
and ranking bars of the streets/townships. The PDF is the same HTML printed by headless chromium.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from cityops.errors import CityopsError

# Target lines drawn on the trend charts (fractions for ratio metrics).
TREND_TARGETS: dict[str, tuple[float, str]] = {
    "lighting_rate": (0.99, "target 99% (cy-gov-05)"),
    "complaint_density": (0.621, "target 0.621 = 0.69 × (1 − 10%) (cy-gov-25)"),
}
RANK_METRICS = (
    "lighting_rate",
    "room_temp_compliance",
    "complaint_density",
    "charger_availability",
)

CSS = """
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", sans-serif;
       margin: 24px; color: #222; font-size: 12px; }
h1 { font-size: 20px; } h2 { font-size: 16px; border-bottom: 1px solid #999; margin-top: 24px; }
p.provisional { background: #fff3cd; border: 1px solid #e0c36c; padding: 6px; }
.nw { white-space: nowrap; } div.wide { min-width: 18em; } div.small { font-size: 9px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; } td.t { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.achieved_early { background: #d4f4d4; } .on_track { background: #eef8ee; }
.adjust { background: #fbd9d3; } .no_target, .pending { background: #f3f3f3; }
@media print { h2 { page-break-after: avoid; } table, svg { page-break-inside: avoid; } }
@page { size: A4 landscape; margin: 12mm; }
"""


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


def trend_svg(
    title: str, points: list[dict[str, Any]], target: tuple[float, str] | None, ratio: bool
) -> str:
    """A line chart of monthly values with an optional dashed target line."""
    w, h, pad = 420, 200, 40
    vals: list[float] = [float(p["value"]) for p in points if p["value"] is not None]
    lo_hi = vals + ([target[0]] if target else [])
    if not lo_hi:
        empty = f'<text x="10" y="20">{escape(title)}: no data</text>'
        return f'<svg width="{w}" height="{h}">{empty}</svg>'
    lo, hi = min(lo_hi), max(lo_hi)
    if hi == lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    span = hi - lo
    lo, hi = lo - 0.1 * span, hi + 0.1 * span
    n = max(1, len(points) - 1)

    def x(i: int) -> float:
        return pad + i * (w - 2 * pad) / n

    def y(v: float) -> float:
        return h - pad + (lo - v) * (h - 2 * pad) / (hi - lo)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
        f'<text x="{pad}" y="16" font-size="12">{escape(title)}</text>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>',
    ]
    for v in (lo, hi):
        label = f"{v * 100:.1f}%" if ratio else f"{v:.3g}"
        parts.append(f'<text x="2" y="{y(v) + 4:.1f}" font-size="9">{label}</text>')
    if target:
        ty = y(target[0])
        parts.append(
            f'<line x1="{pad}" y1="{ty:.1f}" x2="{w - pad}" y2="{ty:.1f}" '
            'stroke="#c00" stroke-dasharray="4 3"/>'
        )
        parts.append(
            f'<text x="{pad + 4}" y="{ty - 4:.1f}" font-size="9" fill="#c00">'
            f"{escape(target[1])}</text>"
        )
    path = [(x(i), y(p["value"])) for i, p in enumerate(points) if p["value"] is not None]
    if len(path) > 1:
        d = " ".join(f"{px:.1f},{py:.1f}" for px, py in path)
        parts.append(f'<polyline points="{d}" fill="none" stroke="#06c" stroke-width="2"/>')
    parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="#06c"/>' for px, py in path)
    for i, p in enumerate(points):
        if i % 3 == 0 or i == len(points) - 1:
            parts.append(
                f'<text x="{x(i) - 14:.1f}" y="{h - pad + 14}" font-size="9">{p["month"]}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def ranking_svg(
    title: str, bars: list[tuple[str, float]], ratio: bool, highlight: str | None
) -> str:
    """Horizontal bars of each area's value, best first."""
    if not bars:
        empty = f'<text x="0" y="14" font-size="12">{escape(title)}: no data</text>'
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="420" height="24">{empty}</svg>'
    row, w, label_w = 14, 420, 110
    h = 24 + row * max(1, len(bars))
    top = max((v for _, v in bars), default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
        f'<text x="0" y="14" font-size="12">{escape(title)}</text>',
    ]
    for i, (name, v) in enumerate(bars):
        yy = 20 + i * row
        bw = max(0.0, v / top) * (w - label_w - 60)
        color = "#e67e22" if name == highlight else "#06c"
        value = f"{v * 100:.2f}%" if ratio else f"{v:.3g}"
        parts.append(f'<text x="0" y="{yy + 10}" font-size="9">{escape(name)}</text>')
        parts.append(
            f'<rect x="{label_w}" y="{yy}" width="{bw:.1f}" height="{row - 3}" fill="{color}"/>'
        )
        parts.append(f'<text x="{label_w + bw + 4:.1f}" y="{yy + 10}" font-size="9">{value}</text>')
    parts.append("</svg>")
    return "".join(parts)


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
    """A line saying the month is partial, or has no data at all (empty otherwise)."""
    c = report.get("completeness") or {}
    notes = [c["note"]] if c.get("partial") else []
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
    out = [
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>月度运行报告 {escape(report['month'])} {escape(scope['code'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>城市运行月度报告 Monthly operations report — {escape(report['month'])}, "
        f"{escape(scope['level'])} {escape(scope['code'])}</h1>",
        f"<p>Catalog version {escape(report['catalog_version'])} · period "
        f"{escape(report['period']['start'])} – {escape(report['period']['end'])} (UTC; months are "
        f"{escape(report['period']['timezone'])} calendar months) · generated "
        f"{escape(report['generated_at'])}</p>",
        _provisional_note(report),
        _completeness_note(report),
        '<h2>Trends against targets 指标趋势</h2><div class="charts">',
    ]
    for metric, points in report["trends"].items():
        d = defs[metric]
        out.append(
            trend_svg(
                f"{d['name_zh']} {d['name_en']}",
                points,
                TREND_TARGETS.get(metric),
                d["unit"] == "ratio",
            )
        )
    out.append('</div><h2>Rankings of streets/townships 街乡排名</h2><div class="charts">')
    for metric in RANK_METRICS:
        rows = sorted(
            (r for r in report["rates"] if r["metric"] == metric and r["rank"]),
            key=lambda r: r["rank"],
        )
        bars = [(names.get(r["scope"], r["scope"]), r["value"]) for r in rows]
        highlight = names.get(scope["code"]) if scope["level"] == "area" else None
        out.append(
            ranking_svg(defs[metric]["name_zh"], bars, defs[metric]["unit"] == "ratio", highlight)
        )
    out.append("</div><h2>Rates 运行指标</h2>")
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
    out.append("</body></html>\n")
    return "".join(out).encode("utf-8")


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

"""The monthly report as a person sees it: the PDF's pages rendered to PNG and read back.

A district with the 43 reference streets/townships gets a year of hand-made monthly sums (two
months left empty); the report for January 2026 is printed to PDF by chromium, its pages read
with pdftotext and rendered with pdftoppm, and the test asserts what must be on them: the title,
every area in the rankings as text (Chinese, so the CJK font must have reached the PDF), each
chart's title with plotted data under it, target lines, and gaps for the months without data.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from cityops.settings import DatabaseSettings, Settings
from reports import charts, formats, monthly, render_html
from tests.conftest import require_cjk_font, require_tool

pytestmark = [pytest.mark.pg, pytest.mark.slow]

ZONE = ZoneInfo("Asia/Shanghai")
MONTH = "2026-01"
EMPTY_MONTHS = ("2025-04", "2025-05")  # no data at all: gaps in the trend lines
RANK_METRICS = render_html.RANK_METRICS


def _month_start(label: str) -> datetime:
    y, m = map(int, label.split("-"))
    return datetime(y, m, 1, tzinfo=ZONE).astimezone(UTC)


def _months(last: str, n: int) -> list[str]:
    y, m = map(int, last.split("-"))
    out = []
    for i in range(n - 1, -1, -1):
        k = y * 12 + m - 1 - i
        out.append(f"{k // 12:04d}-{k % 12 + 1:02d}")
    return out


def seed(dsn: str, months: list[str], *, partial_area: str | None = None) -> list[str]:
    """One hour of sums per area, metric and month (values vary by area); returns the codes.

    Heating metrics only in the heating season (Nov-Mar), like the stream writes them.
    ``partial_area`` gets a lighting coverage of 60 %. Every area has a device of each kind
    (areas without devices are not ranked).
    """
    rows: list[tuple[Any, ...]] = []
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        codes = [r[0] for r in conn.execute("SELECT code FROM areas ORDER BY code").fetchall()]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO devices (device_id, kind, area_code) VALUES (%s, %s, %s)",
                [
                    (f"{kind}-{code}", kind, code)
                    for code in codes
                    for kind in ("streetlight", "heating", "manhole", "charger")
                ],
            )
        for mi, label in enumerate(months):
            if label in EMPTY_MONTHS:
                continue
            hour = _month_start(label) + timedelta(hours=12)
            heating = int(label[5:]) in (11, 12, 1, 2, 3)
            for ai, code in enumerate(codes):
                lit = 0.97 + 0.0005 * ai + 0.001 * (mi % 3)
                cov = 0.6 if code == partial_area else 0.98
                rows += [
                    (code, "streetlight", "lighting_rate", hour, 1000 * lit, 1000),
                    (code, "streetlight", "lighting_coverage", hour, 1000 * cov, 1000),
                    (code, "charger", "charger_availability", hour, 900 + ai, 1000),
                    (code, "charger", "charger_online", hour, 990, 1000),
                ]
                if heating:
                    rows += [
                        (code, "heating", "room_temp_compliance", hour, 800 + 3 * ai, 1000),
                        (code, "heating", "room_temp_coverage", hour, 950, 1000),
                        (code, "heating", "complaint_density", hour, ai % 7, 10),
                    ]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO rates_hourly (area_code, kind, metric, hour, numerator,"
                " denominator, samples) VALUES (%s, %s, %s, %s, %s, %s, 1)",
                rows,
            )
    return codes


def build(dsn: str, now: datetime | None = None, area: str | None = None) -> dict[str, Any]:
    """The district report for MONTH (or one area's)."""
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        return monthly.build(
            conn, Settings(db=DatabaseSettings(dsn=dsn)), MONTH, now=now, area=area
        )


@dataclass
class Page:
    """One PDF page: its text, its words with boxes (points), its PNG (1 px = 1 pt)."""

    text: str
    words: list[tuple[str, float, float, float, float]]
    png: Path


def read_pages(pdf: bytes, workdir: Path, first: int = 1, last: int = 6) -> list[Page]:
    """The PDF's pages ``first..last`` as text (pdftotext) and images (pdftoppm, 72 dpi)."""
    pdftotext = require_tool("pdftotext", "poppler-utils")
    pdftoppm = require_tool("pdftoppm", "poppler-utils")
    src = workdir / "report.pdf"
    src.write_bytes(pdf)
    pages = []
    for n in range(first, last + 1):
        rng = ["-f", str(n), "-l", str(n)]
        text = subprocess.run(
            [pdftotext, "-layout", *rng, str(src), "-"], capture_output=True, check=True, text=True
        ).stdout
        bbox = subprocess.run(
            [pdftotext, "-bbox", *rng, str(src), "-"], capture_output=True, check=True, text=True
        ).stdout
        words = [
            (w, float(a), float(b), float(c), float(d))
            for a, b, c, d, w in re.findall(
                r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)<',
                bbox,
            )
        ]
        prefix = workdir / f"page{n}"
        subprocess.run(
            [pdftoppm, "-png", "-r", "72", "-singlefile", *rng, str(src), str(prefix)], check=True
        )
        pages.append(Page(text=text, words=words, png=prefix.with_suffix(".png")))
    return pages


def ink(png: Path, box: tuple[float, float, float, float], color: str, tol: int = 40) -> int:
    """Pixels within ``tol`` of ``color`` (#rrggbb) inside ``box`` (x0, y0, x1, y1 in points)."""
    import numpy as np
    from PIL import Image

    want = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    with Image.open(png) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    x0, y0, x1, y1 = (max(0, round(v)) for v in box)
    crop = pixels[y0:y1, x0:x1]
    return int(np.all(np.abs(crop - want) <= tol, axis=-1).sum())


def chart_box(page: Page, first_word: str, height_in: float) -> tuple[float, float, float, float]:
    """The area under a chart title (found by its first word) as wide and tall as a chart."""
    hits = [w for w in page.words if w[0] == first_word]
    assert hits, f"chart title {first_word!r} not on the page: {page.text[:400]}"
    _, x0, y0, _, _ = hits[0]
    return (x0 - 6, y0, x0 - 6 + charts.WIDTH_IN * 72, y0 + height_in * 72)


def _need_pdf_tools() -> None:
    require_tool("chromium", "chromium")
    require_cjk_font()


@pytest.fixture
def year_db(migrated_db: str) -> tuple[str, list[str]]:
    """Thirteen months up to MONTH (two empty), 43 areas, one of them on partial data."""
    codes = seed(migrated_db, _months(MONTH, 13), partial_area="CY-JW")
    return migrated_db, codes


def test_pdf_pages_show_title_every_area_and_each_chart(
    year_db: tuple[str, list[str]], tmp_path: Path
) -> None:
    _need_pdf_tools()
    dsn, codes = year_db
    report = build(dsn)
    names = {a["code"]: a["name_zh"] for a in report["scope"]["areas"]}
    assert len(names) == 43
    pdf = formats.render(report, formats.Format.PDF)
    pages = read_pages(pdf, tmp_path, 1, 4)

    # page 1: the title and the four trend charts, each with a plotted line under its title
    first = pages[0]
    assert "城市运行月度报告" in first.text
    assert MONTH in first.text
    assert "month in progress" not in first.text  # January is over: nothing marked partial
    defs = report["definitions"]
    for metric in report["trends"]:
        title_word = defs[metric]["name_zh"]
        box = chart_box(first, title_word, 2.45)
        assert ink(first.png, box, charts.DATA) > 150, f"no plotted line in the {metric} trend"
        if metric in ("lighting_rate", "complaint_density"):
            assert ink(first.png, box, charts.TARGET) > 40, f"no target line in {metric}"
    lighting_box = chart_box(first, defs["lighting_rate"]["name_zh"], 2.45)
    assert ink(first.png, lighting_box, charts.NO_DATA, tol=6) > 300, "empty months not shaded"
    assert "target 99% (cy-gov-05)" in first.text
    # percent axes stay within 0-100 %: no tick label above 100 % anywhere on the page
    percents = [float(p) for p in re.findall(r"(\d+(?:\.\d+)?)%", first.text)]
    assert percents
    assert max(percents) <= 100

    # the ranking pages: every street/township by name, as text, once per ranked metric
    ranking = "\n".join(p.text for p in pages[1:] if "街乡排名" in p.text or "ranked)" in p.text)
    assert "街乡排名" in ranking
    # the layout: the rankings start on page 2 under their heading, two whole charts a page
    assert "街乡排名" in pages[1].text
    for page in pages[1:3]:
        assert page.text.count("ranked)") == 2, page.text[:600]
    for code in codes:
        assert ranking.count(names[code]) >= 3, f"{names[code]} ({code}) missing in the rankings"
    # each ranking chart: its title and bars under it
    for metric in RANK_METRICS:
        title_word = defs[metric]["name_zh"]
        page = next((p for p in pages[1:] if any(w[0] == title_word for w in p.words)), None)
        assert page is not None, f"ranking chart of {metric} not found"
        box = chart_box(page, title_word, charts.ranking_height(43))
        assert ink(page.png, box, charts.DATA) > 1500, f"no bars in the {metric} ranking"
    # the area on partial data carries its coverage and the partial legend
    assert "cov 60%" in ranking
    assert "partial data" in ranking


@pytest.fixture
def one_month_db(migrated_db: str) -> tuple[str, list[str]]:
    """Only MONTH has data."""
    return migrated_db, seed(migrated_db, [MONTH])


def test_one_month_in_progress_is_a_marked_value_not_a_lonely_point(
    one_month_db: tuple[str, list[str]], tmp_path: Path
) -> None:
    dsn, _ = one_month_db
    mid = datetime(2026, 1, 17, 6, tzinfo=UTC)  # 17 January, 14:00 in Beijing
    report = build(dsn, now=mid)
    html = formats.render(report, formats.Format.HTML).decode()
    # the trend of a single month is its value, said to be the only month with data
    assert html.count("the only month with data") == len(report["trends"])
    district = next(
        r for r in report["rates"] if r["metric"] == "lighting_rate" and r["level"] == "district"
    )
    assert charts.fmt_value(district["value"], ratio=True) in html
    # the month in progress is said so at the top and in every ranking chart (398 h of 744)
    assert "month in progress: data to 2026-01-17 14:00 (Asia/Shanghai), 53% of the month" in html
    assert html.count("ranks provisional") == len(RANK_METRICS)
    assert html.count("本月尚未结束") == 1
    # said once: the completeness note does not repeat it, the notice gives the as-of day
    assert "is in progress; figures cover" not in html
    assert "the plan evaluation is as of the last complete day, 2026-01-16" in html.lower()
    assert "cov 98%" in html

    _need_pdf_tools()
    pdf = formats.render(report, formats.Format.PDF)
    pages = read_pages(pdf, tmp_path, 1, 3)
    first = pages[0]
    assert "本月尚未结束" in first.text
    assert "the only month with data" in first.text
    # the value chart shows a bar against its scale, not a point on a year axis
    box = chart_box(first, report["definitions"]["charger_availability"]["name_zh"], 2.45)
    assert ink(first.png, box, charts.PARTIAL, tol=12) > 400
    # the rankings, with their provisional titles, still fit: two whole charts per page
    names = [a["name_zh"] for a in report["scope"]["areas"]]
    for page in pages[1:]:
        assert page.text.count("ranks provisional") == 2, page.text[:600]
        for name in names:
            assert page.text.count(name) == 2, f"{name} not in both rankings of the page"


def test_area_report_shows_where_the_area_stands(year_db: tuple[str, list[str]]) -> None:
    dsn, _ = year_db
    report = build(dsn, area="CY-JW")
    html = formats.render(report, formats.Format.HTML).decode()
    jw = next(
        r for r in report["rates"] if r["metric"] == "lighting_rate" and r["scope"] == "CY-JW"
    )
    # its own bar, highlighted, with its district-wide rank, value and (partial) coverage
    assert f"{jw['rank']}. 建外街道" in html
    assert "(43 ranked)" in html
    assert f"{charts.fmt_value(jw['value'], ratio=True)}  cov 60%" in html
    assert charts.HIGHLIGHT in html

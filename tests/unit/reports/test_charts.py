"""The report charts: axes fitted to the quantity, gaps, a single month as a value, partial data,
CJK text kept as text, and a machine without a CJK font still rendering (and saying so)."""

from __future__ import annotations

import html
import re
import warnings
from pathlib import Path

import pytest

from reports import charts, fonts
from tests.conftest import require_cjk_font

MONTHS = [f"2025-{m:02d}" for m in range(1, 13)] + ["2026-01"]


def _points(values: list[float | None]) -> list[dict[str, object]]:
    return [{"month": m, "value": v} for m, v in zip(MONTHS, values, strict=True)]


def _texts(svg: str) -> list[str]:
    return [html.unescape(t.strip()) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


def _percent_ticks(svg: str) -> list[float]:
    return [float(t[:-1]) for t in _texts(svg) if re.fullmatch(r"-?\d+(\.\d+)?%", t)]


def test_value_axis_fits_the_quantity() -> None:
    # the lighting rates of a month in progress: a zoomed percent axis that ends at 100 %
    assert charts.value_axis([0.54, 0.66], ratio=True, target=0.99) == (0.5, 1.0)
    assert charts.value_axis([0.985, 0.99], ratio=True) == (0.9, 1.0)
    # low values, or bars (zoom=False): from zero
    assert charts.value_axis([0.4, 0.8], ratio=True) == (0.0, 1.0)
    assert charts.value_axis([0.97], ratio=True, zoom=False) == (0.0, 1.0)
    # past 100 % only when the data is
    lo, hi = charts.value_axis([0.9, 1.2], ratio=True)
    assert lo == 0.8
    assert hi == pytest.approx(1.26)
    # densities and counts from zero, with room for the target
    lo, hi = charts.value_axis([0.3, 0.5], ratio=False, target=0.621)
    assert lo == 0.0
    assert hi == pytest.approx(0.621 * 1.15)
    assert charts.value_axis([0.0, 0.0], ratio=False) == (0.0, 1.0)
    assert charts.value_axis([], ratio=True) == (0.0, 1.0)


def test_trend_keeps_percentages_within_0_100_and_shades_months_without_data() -> None:
    values: list[float | None] = [0.42, 0.9, None, None, 0.95, 1.0, 0.6, 0.7, 0.8, 0.9, 0.95]
    values += [0.97, 0.66]
    svg = charts.trend_chart(
        "室温达标率 Room-temperature compliance",
        _points(values),
        ratio=True,
        target=charts.Target(0.99, "target 99% (cy-gov-05)"),
        in_progress="2026-01",
        coverage=0.54,
    )
    ticks = _percent_ticks(svg)
    assert ticks
    assert min(ticks) == 0
    assert max(ticks) == 100
    texts = _texts(svg)
    assert "室温达标率 Room-temperature compliance" in texts  # CJK kept as text
    assert "target 99% (cy-gov-05)" in texts
    assert "no data" in texts
    assert "month in progress" in texts
    assert "66.00% (cov 54%)" in texts
    assert svg.count('fill="#e6e6e6"') + svg.count("fill: #e6e6e6") >= 2  # two shaded months


def test_density_axis_starts_at_zero() -> None:
    svg = charts.trend_chart(
        "万平方米供热投诉量",
        _points([0.2, 0.25, 0.3] + [None] * 7 + [0.22, 0.24, 0.26]),
        ratio=False,
        target=charts.Target(0.621, "target 0.621"),
    )
    numbers = [float(t) for t in _texts(svg) if re.fullmatch(r"-?\d+(\.\d+)?", t)]
    # y ticks from 0 (the old charts went down to -0.06); none negative
    assert min(numbers) == 0
    assert all(n >= 0 for n in numbers)


def test_a_single_month_is_a_value_not_a_point_on_a_year_axis() -> None:
    svg = charts.trend_chart(
        "城市道路亮灯率", _points([None] * 12 + [0.9805]), ratio=True, coverage=0.98
    )
    texts = _texts(svg)
    assert "98.05%" in texts
    assert "2026-01" in texts
    assert "the only month with data in 2025-01 – 2026-01" in texts
    assert "data coverage 98%" in texts
    assert "02" not in texts  # no year of month ticks around one point
    assert "0%" in texts
    assert "100%" in texts


def test_same_data_same_svg() -> None:
    points = _points([0.9, None, 0.95] + [0.96] * 10)
    a = charts.trend_chart("城市道路亮灯率", points, ratio=True)
    assert a == charts.trend_chart("城市道路亮灯率", points, ratio=True)
    assert a.startswith('<svg class="chart" role="img" aria-label="城市道路亮灯率"')


def test_no_data_at_all_says_so() -> None:
    svg = charts.trend_chart("充电桩可用率", _points([None] * 13), ratio=True)
    assert "no data in 2025-01 – 2026-01" in _texts(svg)


def test_ranking_bars_from_zero_with_coverage_and_partial_marked() -> None:
    bars = [
        charts.Bar(name="左家庄街道", value=0.991, rank=1, coverage=0.99),
        charts.Bar(name="建外街道", value=0.98, rank=2, coverage=0.6),
        charts.Bar(name="奥运村街道", value=0.97, rank=3, coverage=None),
    ]
    svg = charts.ranking_chart(
        "城市道路亮灯率",
        bars,
        ratio=True,
        target=charts.Target(0.99, "target 99%"),
        in_progress="month in progress: 54% of the month; ranks provisional",
    )
    texts = _texts(svg)
    assert {"1. 左家庄街道", "2. 建外街道", "3. 奥运村街道"} <= set(texts)
    assert "99.10%  cov 99%" in texts
    assert "98.00%  cov 60%" in texts
    assert "97.00%" in texts
    assert "coverage < 95%: partial data" in texts
    assert any("ranks provisional" in t for t in texts)
    ticks = _percent_ticks(svg)
    assert min(ticks) == 0
    assert max(ticks) == 100


def test_charts_render_without_a_cjk_font(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without a CJK font still gets charts (names as text), no warnings escape."""
    import matplotlib

    dejavu = Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"
    monkeypatch.setenv(fonts.FONT_ENV, str(dejavu))  # a font without Chinese: not used
    assert fonts.find_cjk_font() is None
    # the variable is outside the settings' groups: every process still starts with it set
    from cityops.settings import Settings

    Settings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svg = charts.ranking_chart(
            "城市道路亮灯率", [charts.Bar("建外街道", 0.9, 1, 1.0)], ratio=True
        )
    assert "1. 建外街道" in _texts(svg)


def test_embedded_font_subset_has_the_names() -> None:
    require_cjk_font()
    font = fonts.find_cjk_font()
    assert font is not None
    css = fonts.font_face_css(font, "建外街道 奥运村街道 城市运行月度报告")
    assert css.startswith(f'@font-face {{ font-family: "{fonts.EMBEDDED_FAMILY}"')
    import base64
    import io

    from fontTools.ttLib import TTFont

    data = base64.b64decode(re.search(r"base64,([^)]+)\)", css).group(1))  # type: ignore[union-attr]
    assert len(data) < 200_000  # a subset, not the 19 MB collection
    cmap = TTFont(io.BytesIO(data)).getBestCmap()
    assert all(ord(c) in cmap for c in "建外街道奥运村城市运行月度报告%0123456789")
    # same text, same bytes (no time stamp in the subset)
    fonts._subset_b64.cache_clear()
    assert fonts.font_face_css(font, "建外街道 奥运村街道 城市运行月度报告") == css

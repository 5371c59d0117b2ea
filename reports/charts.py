"""The report's charts, drawn with matplotlib and inlined in the HTML as SVG with real text.

The same SVG is what the browser shows and what chromium prints to PDF, so the HTML and the PDF
look the same. Text stays text (``svg.fonttype = none``): the page's embedded CJK font draws it
and a PDF reader can search and copy the street/township names.

What the charts promise a reader:

* axes fitted to the quantity: percentages within 0-100 % (a trend may zoom in to a round lower
  bound when every value is high, never past 100 % unless a value is); counts and densities,
  and every bar, from zero;
* target lines labelled with their value and source;
* months without data are shaded gaps, not interpolated;
* a single month with data is shown as a value (with a bar against its scale and the target),
  not as a lonely point on a year axis;
* a month in progress, and bars computed from partial data (coverage below 95 %), are marked.
"""

from __future__ import annotations

import io
import math
import textwrap
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any, cast

from reports.fonts import CjkFont, find_cjk_font

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DATA = "#1f5fa8"
PARTIAL = "#9db8da"
TARGET = "#c0392b"
NO_DATA = "#e6e6e6"
HIGHLIGHT = "#e67e22"
MUTED = "#666666"
LOW_COVERAGE = 0.95  # below this share of expected data a bar is drawn as partial
WIDTH_IN = 5.2  # two charts side by side on an A4 landscape page

_LOCK = threading.Lock()  # rcParams are global; the API may render reports in threads
_REGISTERED: set[str] = set()


@dataclass(frozen=True, slots=True)
class Target:
    """A target line: its value (fractions for ratios) and its label."""

    value: float
    label: str


@dataclass(frozen=True, slots=True)
class Bar:
    """One street/township in a ranking."""

    name: str
    value: float
    rank: int
    coverage: float | None = None
    tied: bool = False  # shares its rank with another area: labelled "2=" like the tables


def fmt_value(value: float, ratio: bool) -> str:
    """A value as printed on a chart: ratios as percent with two decimals, others 3 digits."""
    return f"{value * 100:.2f}%" if ratio else f"{value:.3g}"


def value_axis(
    values: Sequence[float], *, ratio: bool, target: float | None = None, zoom: bool = True
) -> tuple[float, float]:
    """Axis limits fitted to the quantity.

    Ratios: 0 to 100 %; with ``zoom`` and every value (and the target) at or above 50 %, the lower
    bound rises to the 10-point step at least 2 points below the lowest value. The upper bound
    passes 100 % only when a value does. Counts and densities: from zero (lower only for a
    negative value) to 15 % above the largest value or the target.
    """
    data = [v for v in values if math.isfinite(v)]
    if target is not None:
        data.append(target)
    if not data:
        return 0.0, 1.0
    lo_d, hi_d = min(data), max(data)
    if ratio:
        hi = 1.0 if hi_d <= 1.0 else hi_d * 1.05
        lo = 0.0
        if lo_d < 0:
            lo = lo_d * 1.05
        elif zoom and lo_d >= 0.5:
            lo = math.floor(round((lo_d - 0.02) * 10, 9)) / 10
        return lo, hi
    lo = min(0.0, lo_d * 1.15)
    hi = hi_d * 1.15 if hi_d > 0 else 1.0
    return lo, hi


def _rc(font: CjkFont | None) -> dict[str, Any]:
    families = [font.family] if font else []
    return {
        "svg.fonttype": "none",  # text stays text: searchable, drawn by the page's font
        "svg.hashsalt": "cityops-report",  # stable element ids: same report, same bytes
        "font.family": ["sans-serif"],
        "font.sans-serif": [*families, "DejaVu Sans"],
        "font.size": 7.5,
        "axes.titlesize": 9,
        "axes.titlelocation": "left",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.edgecolor": "#888888",
        "xtick.color": "#444444",
        "ytick.color": "#444444",
        "legend.fontsize": 6.5,
        "legend.frameon": False,
    }


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Figure, label: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    return text.replace(
        "<svg ", f'<svg class="chart" role="img" aria-label="{escape(label)}" ', 1
    ).strip()


def _draw(build: Callable[[], Figure], label: str) -> str:
    """Run ``build()`` under the report's rc settings and return its figure as SVG."""
    import matplotlib

    font = find_cjk_font()
    with _LOCK, warnings.catch_warnings():
        # Without a CJK font matplotlib measures the names with DejaVu and says so per glyph;
        # the page still embeds no font then and says so itself (render_html).
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        if font is not None and str(font.path) not in _REGISTERED:
            from matplotlib import font_manager

            font_manager.fontManager.addfont(str(font.path))
            _REGISTERED.add(str(font.path))
        with matplotlib.rc_context(cast(Any, _rc(font))):
            fig = build()
            return _svg(fig, label)


def _percent_axis(ax: Axes, axis: str) -> None:
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10]))  # whole percent steps
    target.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))


def message_chart(title: str, message: str) -> str:
    """A chart-sized box saying why there is no chart (e.g. no data at all)."""

    def build() -> Figure:
        fig = _figure(WIDTH_IN, 1.1)
        fig.text(0.01, 0.78, title, fontsize=9)
        fig.text(0.01, 0.3, message, fontsize=8, color=MUTED)
        return fig

    return _draw(build, f"{title}: {message}")


def trend_chart(
    title: str,
    points: Sequence[dict[str, Any]],
    *,
    ratio: bool,
    target: Target | None = None,
    in_progress: str | None = None,
    coverage: float | None = None,
) -> str:
    """Monthly values over the report's months (``[{"month", "value"}]``) as inline SVG.

    ``in_progress``: the label of the month still running (its point is drawn hollow);
    ``coverage``: the data coverage of the last month, printed beside its value.
    """
    months = [str(p["month"]) for p in points]
    present = [(i, float(p["value"])) for i, p in enumerate(points) if p["value"] is not None]
    span = f"{months[0]} – {months[-1]}" if months else ""
    if not present:
        return message_chart(title, f"no data in {span}")
    if len(present) == 1:
        i, v = present[0]
        return value_chart(
            title,
            v,
            months[i],
            ratio=ratio,
            target=target,
            note=f"the only month with data in {span}",
            in_progress=months[i] == in_progress,
            coverage=coverage if i == len(months) - 1 else None,
        )

    def build() -> Figure:
        from matplotlib.patches import Patch

        fig = _figure(WIDTH_IN, 2.45)
        ax = fig.add_subplot()
        xs = list(range(len(points)))
        ys = [math.nan if p["value"] is None else float(p["value"]) for p in points]
        handles: list[Any] = []
        gaps = [x for x, y in zip(xs, ys, strict=True) if math.isnan(y)]
        for x in gaps:
            ax.axvspan(x - 0.5, x + 0.5, color=NO_DATA, lw=0, zorder=0)
        if gaps:
            handles.append(Patch(color=NO_DATA, label="no data"))
        running = months.index(in_progress) if in_progress in months else None
        done = _mark_running(ax, ys, running, handles)
        ax.plot(xs, done, color=DATA, lw=1.8, marker="o", ms=3.5, zorder=3, clip_on=False)
        lo, hi = value_axis(
            [y for y in ys if not math.isnan(y)],
            ratio=ratio,
            target=target.value if target else None,
        )
        ax.set_ylim(lo, hi)
        if target is not None:
            ax.axhline(target.value, color=TARGET, ls="--", lw=1.4, zorder=2)
            # above the line where there is room, else below it
            above = (hi - target.value) / (hi - lo) > 0.08
            ax.annotate(
                target.label,
                (0, target.value),
                xytext=(2, 2 if above else -3),
                textcoords="offset points",
                color=TARGET,
                fontsize=6.5,
                va="bottom" if above else "top",
                zorder=5,
            )
        last_i, last_v = present[-1]
        last_label = fmt_value(last_v, ratio)
        if coverage is not None and last_i == len(months) - 1:
            last_label += f" (cov {coverage * 100:.0f}%)"
        ax.annotate(
            last_label,
            (last_i, last_v),
            xytext=(0, 6),
            textcoords="offset points",
            ha="right",
            fontsize=7,
            color=DATA,
        )
        if ratio:
            _percent_axis(ax, "y")
        ax.set_xlim(-0.5, len(points) - 0.5)
        ax.set_xticks(xs)
        ax.set_xticklabels(
            [
                m[:4] + "\n" + m[5:] if i == 0 or m.endswith("-01") else m[5:]
                for i, m in enumerate(months)
            ]
        )
        ax.grid(axis="y", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        ax.set_title(title)
        if handles:
            ax.legend(handles=handles, loc="best", frameon=True, framealpha=0.85)
        return fig

    return _draw(build, title)


def _mark_running(
    ax: Axes, ys: list[float], running: int | None, handles: list[Any]
) -> list[float]:
    """Draw the month still running apart; return the other months' series for the solid line.

    Its value rests on part of the month, so it is not joined to the others by a solid line: a
    dotted link and a hollow marker say so.
    """
    if running is None or math.isnan(ys[running]):
        return ys
    from matplotlib.lines import Line2D

    prev = max((i for i in range(running) if not math.isnan(ys[i])), default=None)
    if prev is not None:
        ax.plot([prev, running], [ys[prev], ys[running]], color=DATA, lw=1, ls=":")
    ax.plot(
        [running],
        [ys[running]],
        marker="o",
        ms=6,
        mfc="white",
        mec=DATA,
        mew=1.5,
        zorder=4,
        clip_on=False,
    )
    handles.append(
        Line2D(
            [], [], ls=":", marker="o", mfc="white", mec=DATA, color=DATA, label="month in progress"
        )
    )
    return [math.nan if i == running else y for i, y in enumerate(ys)]


def value_chart(
    title: str,
    value: float,
    month: str,
    *,
    ratio: bool,
    target: Target | None = None,
    note: str = "",
    in_progress: bool = False,
    coverage: float | None = None,
) -> str:
    """One month's value as a number, with a bar against its full scale and the target."""

    def build() -> Figure:
        fig = _figure(WIDTH_IN, 2.45)
        fig.get_layout_engine().set(rect=(0.0, 0.0, 1.0, 0.42))  # type: ignore[call-arg,union-attr]
        fig.text(0.012, 0.9, title, fontsize=9)
        fig.text(0.012, 0.6, fmt_value(value, ratio), fontsize=24, color=DATA, weight="bold")
        when = f"{month} (month in progress)" if in_progress else month
        fig.text(0.4, 0.66, when, fontsize=8)
        fig.text(0.4, 0.57, note, fontsize=7, color=MUTED)
        if coverage is not None:
            fig.text(0.4, 0.48, f"data coverage {coverage * 100:.0f}%", fontsize=7, color=MUTED)
        ax = fig.add_subplot()
        lo, hi = value_axis(
            [value], ratio=ratio, target=target.value if target else None, zoom=False
        )
        color = PARTIAL if in_progress else DATA
        ax.barh([0], [value], height=0.6, color=color, hatch="///" if in_progress else None)
        ax.set_xlim(lo, hi)
        ax.set_ylim(-0.6, 0.6)
        ax.set_yticks([])
        ax.spines["left"].set_visible(False)
        if target is not None:
            ax.axvline(target.value, color=TARGET, ls="--", lw=1.2)
            ax.annotate(
                target.label,
                (target.value, 0.6),
                xytext=(0, 2),
                textcoords="offset points",
                ha="right" if target.value > (lo + hi) / 2 else "left",
                va="bottom",
                color=TARGET,
                fontsize=6.5,
                annotation_clip=False,
            )
        if ratio:
            _percent_axis(ax, "x")
        return fig

    return _draw(build, title)


def ranking_height(n: int, *, in_progress: bool = False) -> float:
    """Height in inches of a ranking of ``n`` bars: 43 fit an A4 landscape page under a heading."""
    return max(1.8, 0.8 + 0.125 * n + (0.3 if in_progress else 0.0))


def ranking_chart(
    title: str,
    bars: Sequence[Bar],
    *,
    ratio: bool,
    target: Target | None = None,
    highlight: str | None = None,
    in_progress: str | None = None,
) -> str:
    """Horizontal bars of the streets/townships, best first, value and coverage beside each.

    Bars start at zero. A bar whose coverage is below 95 % is drawn light and hatched (partial
    data); tied ranks are labelled ``2=``; ``in_progress`` (e.g. "month in progress, 54 %
    elapsed") goes under the title.
    """
    if not bars:
        return message_chart(title, "no street/township has a value this month")

    def build() -> Figure:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        n = len(bars)
        fig = _figure(WIDTH_IN, ranking_height(n, in_progress=bool(in_progress)))
        ax = fig.add_subplot()
        ys = list(range(n))
        partial = [b.coverage is not None and b.coverage < LOW_COVERAGE for b in bars]
        colors = [
            HIGHLIGHT if b.name == highlight else (PARTIAL if p else DATA)
            for b, p in zip(bars, partial, strict=True)
        ]
        rects = ax.barh(ys, [b.value for b in bars], height=0.72, color=colors)
        for rect, p in zip(rects, partial, strict=True):
            if p:
                rect.set_hatch("////")
                rect.set_edgecolor("white")
        lo, hi = value_axis(
            [b.value for b in bars],
            ratio=ratio,
            target=target.value if target else None,
            zoom=False,
        )
        ax.set_xlim(lo, hi)
        # values in a column right of the plot: they never collide with the bars or the target
        column = ax.get_yaxis_transform()  # x in axes fraction, y in data
        for y, b in zip(ys, bars, strict=True):
            label = fmt_value(b.value, ratio)
            if b.coverage is not None:
                label += f"  cov {b.coverage * 100:.0f}%"
            ax.annotate(
                label,
                (1.0, y),
                xycoords=column,
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=6,
                annotation_clip=False,
            )
        ax.set_yticks(ys)
        ax.set_yticklabels(
            [f"{b.rank}{'=' if b.tied else ''}. {b.name}" for b in bars], fontsize=6.5
        )
        ax.set_ylim(n - 0.5, -0.5)  # best on top
        ax.tick_params(axis="y", length=0)
        handles: list[Any] = []
        if target is not None:
            ax.axvline(target.value, color=TARGET, ls="--", lw=1.4)
            handles.append(Line2D([], [], color=TARGET, ls="--", label=target.label))
        if any(partial):
            handles.append(
                Patch(
                    facecolor=PARTIAL,
                    hatch="////",
                    edgecolor="white",
                    label=f"coverage < {LOW_COVERAGE * 100:.0f}%: partial data",
                )
            )
        if ratio:
            _percent_axis(ax, "x")
        ax.xaxis.tick_top()
        ax.grid(axis="x", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        note = "\n".join(textwrap.wrap(in_progress, 64)) if in_progress else ""
        ax.set_title(f"{title}\n{note}" if note else title)
        if handles:
            fig.legend(handles=handles, loc="outside lower left", ncol=2)
        return fig

    return _draw(build, title)

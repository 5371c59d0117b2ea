"""Plan evaluation: classify an indicator at an as-of date, the way the mid-term evaluation does.

Pure functions, no I/O. For an as-of date d (plan period 2021-01-01 .. 2025-12-31):

- **提前完成 achieved early** — the latest value meets the target (equality meets).
- **可以完成 on track** — "时间过半、任务过半": task share
  (current − baseline) ÷ (target − baseline) ≥ time share; or, when behind, the forecast
  for 2025-12-31 meets the target (``at_risk``).
- **建议调整 adjustment proposed** (reported as 完成存在困难) — behind and the forecast misses; a
  proposed target (the user's, else the forecast) and a reason are given.
- Dynamic indicators are judged by projecting their trend to the plan end; qualitative ones by the
  status or value of their latest observation; a value supplied by another authority with its
  own status keeps that status. A missing (withheld) target gives **no target**; too little data
  gives **pending**. See docs/indicators.md for worked examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from cityops.errors import ValidationError
from reports.catalog import Attribute, Direction, Indicator, IndicatorKind

PLAN_START = date(2021, 1, 1)
PLAN_END = date(2025, 12, 31)
BASELINE_DATE = date(2020, 12, 31)
PLAN_DAYS = (PLAN_END - PLAN_START).days + 1


class Status(StrEnum):
    """Evaluation status of one indicator."""

    ACHIEVED_EARLY = "achieved_early"
    ON_TRACK = "on_track"
    ADJUST = "adjust"
    NO_TARGET = "no_target"
    PENDING = "pending"


class Pace(StrEnum):
    """The second wording: 符合预期 / 慢于预期."""

    AS_EXPECTED = "as_expected"
    SLOWER = "slower"
    NOT_ASSESSED = "not_assessed"


STATUS_LABELS: dict[Status, tuple[str, str]] = {
    Status.ACHIEVED_EARLY: ("提前完成", "achieved early"),
    Status.ON_TRACK: ("可以完成", "on track"),
    Status.ADJUST: ("建议调整", "adjustment proposed"),
    Status.NO_TARGET: ("无目标值", "no target"),
    Status.PENDING: ("待评估", "pending (not enough data)"),
}
# How the overall report words an adjustment-proposed indicator.
REPORT_LABELS: dict[Status, tuple[str, str]] = {
    **STATUS_LABELS,
    Status.ADJUST: ("完成存在困难", "completion at risk"),
}
PACE_LABELS: dict[Pace, tuple[str, str]] = {
    Pace.AS_EXPECTED: ("符合预期", "as expected"),
    Pace.SLOWER: ("慢于预期", "slower than expected"),
    Pace.NOT_ASSESSED: ("—", "not assessed"),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Observation:
    """A dated value of an indicator (entered, imported, or computed from sensors).

    ``status`` is set when the value comes from another authority that gives its own status.
    """

    indicator: str
    on: date
    value: float | None
    source: str
    status: Status | None = None
    note: str = ""
    scope: str = "district"


@dataclass(frozen=True, kw_only=True, slots=True)
class Forecast:
    """A user's end-of-plan forecast with its reason, optionally with the target to propose."""

    indicator: str
    made_on: date
    value: float
    reason: str
    proposed_target: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Evaluation:
    """The outcome for one indicator at ``as_of``, with every number that led to it."""

    key: str
    as_of: date
    status: Status
    at_risk: bool
    reason: str
    current: float | None
    current_on: date | None
    current_source: str | None
    baseline: float | None
    target: float | None
    task_share: float | None
    time_share: float
    forecast: float | None
    forecast_source: str | None  # "user", "trend" or None
    proposed_target: float | None
    authority_status: bool

    @property
    def pace(self) -> Pace:
        """符合预期 for achieved/on track, 慢于预期 for adjustment proposed."""
        if self.status in (Status.ACHIEVED_EARLY, Status.ON_TRACK):
            return Pace.AS_EXPECTED
        if self.status is Status.ADJUST:
            return Pace.SLOWER
        return Pace.NOT_ASSESSED

    def labels(self) -> dict[str, str]:
        """Both wordings in Chinese and English."""
        zh, en = STATUS_LABELS[self.status]
        rzh, ren = REPORT_LABELS[self.status]
        pzh, pen = PACE_LABELS[self.pace]
        return {
            "status_zh": zh,
            "status_en": en,
            "report_zh": rzh,
            "report_en": ren,
            "pace_zh": pzh,
            "pace_en": pen,
        }


def time_share(as_of: date) -> float:
    """Share of the plan period elapsed at the end of ``as_of`` (1.0 from 2025-12-31 on)."""
    if as_of < PLAN_START:
        raise ValidationError(
            f"as-of date {as_of} is before the plan period starts ({PLAN_START})", "as_of"
        )
    return min(1.0, ((as_of - PLAN_START).days + 1) / PLAN_DAYS)


def _span_share(start: date, as_of: date) -> float:
    """Time share measured from ``start`` (a stand-in baseline date) to the plan end."""
    total = (PLAN_END - start).days
    return 1.0 if total <= 0 else min(1.0, max(0.0, (as_of - start).days / total))


def meets(value: float, target: float, direction: Direction) -> bool:
    """True when ``value`` reaches ``target`` in the good direction; equality meets."""
    tol = 1e-9 * max(1.0, abs(target))  # float noise, not a margin
    if direction is Direction.UP:
        return value >= target - tol
    return value <= target + tol


def trend_projection(points: Sequence[tuple[date, float]], to: date = PLAN_END) -> float | None:
    """Least-squares line through the points, read at ``to``; None with fewer than two dates."""
    if len({d for d, _ in points}) < 2:
        return None
    xs = [float((d - PLAN_START).days) for d, _ in points]
    ys = [v for _, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my + slope * (float((to - PLAN_START).days) - mx)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


@dataclass(frozen=True, slots=True)
class _Ctx:
    indicator: Indicator
    as_of: date
    share: float
    target: float | None
    values: list[Observation]
    latest: Observation | None
    forecast: Forecast | None


def evaluate(
    indicator: Indicator,
    observations: Iterable[Observation],
    as_of: date,
    forecast: Forecast | None = None,
) -> Evaluation:
    """Classify ``indicator`` at ``as_of`` from observations and an optional user forecast.

    Observations dated after ``as_of`` and forecasts made after it are ignored, so an evaluation
    can be re-run for any past date with the same result.
    """
    share = time_share(as_of)
    obs = sorted(
        (o for o in observations if o.indicator == indicator.key and o.on <= as_of),
        key=lambda o: (o.on, o.source),
    )
    if forecast is not None and (forecast.indicator != indicator.key or forecast.made_on > as_of):
        forecast = None
    if forecast is not None and not forecast.reason.strip():
        raise ValidationError(f"forecast for {indicator.key}: a reason is required", "reason")
    values = [o for o in obs if o.value is not None]
    ctx = _Ctx(
        indicator=indicator,
        as_of=as_of,
        share=share,
        target=indicator.resolved_target,
        values=values,
        latest=obs[-1] if obs else None,
        forecast=forecast,
    )
    if ctx.latest is not None and ctx.latest.status is not None:
        return _authority(ctx, ctx.latest)
    if indicator.kind is IndicatorKind.QUALITATIVE:
        return _qualitative(ctx)
    if ctx.target is None:
        why = (
            "relative target without a 2020 baseline: enter the baseline as a local indicator"
            if indicator.target_change is not None
            else "the plan gives no numeric target (withheld or not stated)"
        )
        return _result(ctx, Status.NO_TARGET, why)
    if not values:
        return _result(ctx, Status.PENDING, "no observation up to the as-of date")
    if indicator.kind is IndicatorKind.DYNAMIC:
        return _dynamic(ctx)
    return _quantitative(ctx)


def _result(
    ctx: _Ctx,
    status: Status,
    reason: str,
    *,
    at_risk: bool = False,
    task: float | None = None,
    forecast: float | None = None,
    forecast_source: str | None = None,
    proposed: float | None = None,
    authority: bool = False,
    baseline: float | None = None,
) -> Evaluation:
    last = ctx.values[-1] if ctx.values else None
    return Evaluation(
        key=ctx.indicator.key,
        as_of=ctx.as_of,
        status=status,
        at_risk=at_risk,
        reason=reason,
        current=None if last is None else last.value,
        current_on=None if last is None else last.on,
        current_source=None if last is None else last.source,
        baseline=ctx.indicator.baseline if baseline is None else baseline,
        target=ctx.target,
        task_share=_round(task),
        time_share=round(ctx.share, 6),
        forecast=_round(forecast),
        forecast_source=forecast_source,
        proposed_target=_round(proposed),
        authority_status=authority,
    )


def _authority(ctx: _Ctx, obs: Observation) -> Evaluation:
    assert obs.status is not None  # noqa: S101 - checked by the caller
    note = f": {obs.note}" if obs.note else ""
    proposed = None
    if obs.status is Status.ADJUST and ctx.forecast is not None:
        proposed = ctx.forecast.proposed_target or ctx.forecast.value
    return _result(
        ctx,
        obs.status,
        f"status supplied by {obs.source} on {obs.on}{note}",
        authority=True,
        proposed=proposed,
    )


def _qualitative(ctx: _Ctx) -> Evaluation:
    last = ctx.values[-1] if ctx.values else None
    if last is not None and last.value is not None and last.value >= 1:
        return _result(ctx, Status.ACHIEVED_EARLY, f"achieved as observed on {last.on}")
    if ctx.forecast is not None and ctx.forecast.value >= 1:
        return _result(
            ctx,
            Status.ON_TRACK,
            f"not yet achieved; forecast says achieved by {PLAN_END}: {ctx.forecast.reason}",
            at_risk=True,
            forecast=ctx.forecast.value,
            forecast_source="user",
        )
    if ctx.forecast is not None:
        return _result(
            ctx,
            Status.ADJUST,
            f"not achieved and the forecast says it will not be: {ctx.forecast.reason}",
            forecast=ctx.forecast.value,
            forecast_source="user",
            proposed=ctx.forecast.proposed_target,
        )
    return _result(
        ctx,
        Status.PENDING,
        "qualitative: enter an observation (1 achieved, 0 not yet) with the assessing authority's "
        "status, or a forecast",
    )


def _points(ctx: _Ctx, *, with_baseline: bool) -> list[tuple[date, float]]:
    pts: list[tuple[date, float]] = []
    ind = ctx.indicator
    if with_baseline and ind.baseline is not None:
        pts.append((BASELINE_DATE, ind.baseline))
    if (
        ind.reference_value is not None
        and ind.reference_date is not None
        and ind.reference_date <= ctx.as_of
    ):
        pts.append((ind.reference_date, ind.reference_value))
    pts.extend((o.on, o.value) for o in ctx.values if o.value is not None)
    return pts


def _forecast(ctx: _Ctx, points: list[tuple[date, float]]) -> tuple[float | None, str | None]:
    """The user's forecast when given (it overrides the trend), else the trend projection."""
    if ctx.forecast is not None:
        return ctx.forecast.value, "user"
    projected = trend_projection(points)
    return projected, None if projected is None else "trend"


def _behind(
    ctx: _Ctx,
    target: float,
    why: str,
    points: list[tuple[date, float]],
    task: float | None,
    baseline: float | None,
) -> Evaluation:
    direction = ctx.indicator.direction
    value, source = _forecast(ctx, points)
    user_reason = f"; forecast reason: {ctx.forecast.reason}" if ctx.forecast else ""
    if value is not None and meets(value, target, direction):
        return _result(
            ctx,
            Status.ON_TRACK,
            f"{why}, but the {source} forecast for {PLAN_END} ({_fmt(value)}) meets the target "
            f"{_fmt(target)}{user_reason}",
            at_risk=True,
            task=task,
            forecast=value,
            forecast_source=source,
            baseline=baseline,
        )
    if value is None:
        return _result(
            ctx,
            Status.PENDING,
            f"{why}; no forecast: enter one with a reason, or more observations for a trend",
            task=task,
            baseline=baseline,
        )
    proposed = (
        ctx.forecast.proposed_target
        if ctx.forecast is not None and ctx.forecast.proposed_target is not None
        else value
    )
    return _result(
        ctx,
        Status.ADJUST,
        f"{why} and the {source} forecast for {PLAN_END} ({_fmt(value)}) misses the target "
        f"{_fmt(target)}; proposed target {_fmt(proposed)}{user_reason}",
        task=task,
        forecast=value,
        forecast_source=source,
        proposed=proposed,
        baseline=baseline,
    )


def _dynamic(ctx: _Ctx) -> Evaluation:
    assert ctx.target is not None  # noqa: S101 - checked by the caller
    points = _points(ctx, with_baseline=True)
    return _behind(
        ctx,
        ctx.target,
        "dynamic indicator judged by trend, not task share",
        points,
        None,
        None,
    )


def _quantitative(ctx: _Ctx) -> Evaluation:
    ind, target = ctx.indicator, ctx.target
    assert target is not None  # noqa: S101 - checked by the caller
    last = ctx.values[-1]
    assert last.value is not None  # noqa: S101 - values hold only observations with a value
    current = last.value
    if meets(current, target, ind.direction):
        if ind.kind is IndicatorKind.CAP:
            breaches = [
                o
                for o in ctx.values
                if o.value is not None and not meets(o.value, target, ind.direction)
            ]
            if breaches:
                return _result(
                    ctx,
                    Status.ON_TRACK,
                    f"within the cap {_fmt(target)} now, but exceeded it on {breaches[-1].on} "
                    f"({_fmt(breaches[-1].value)})",
                    at_risk=True,
                )
        return _result(
            ctx,
            Status.ACHIEVED_EARLY,
            f"current value {_fmt(current)} ({last.on}) meets the target {_fmt(target)}",
        )
    baseline = ind.baseline
    if ind.kind is IndicatorKind.CUMULATIVE and baseline is None:
        baseline = 0.0
    share, start = ctx.share, BASELINE_DATE
    if baseline is None:
        # No 2020 value in the plan: the first observation stands in as the starting point and
        # time share counts from its date (docs/indicators.md).
        first = ctx.values[0]
        if first.on >= last.on:
            return _behind(
                ctx,
                target,
                "no 2020 baseline and a single observation: task share cannot be computed",
                _points(ctx, with_baseline=False),
                None,
                None,
            )
        assert first.value is not None  # noqa: S101
        baseline, start = first.value, first.on
        share = _span_share(start, ctx.as_of)
    if target == baseline:
        task = 1.0 if meets(current, target, ind.direction) else 0.0
    else:
        task = (current - baseline) / (target - baseline)
    points = _points(ctx, with_baseline=True)
    if start != BASELINE_DATE:
        points = [(start, baseline), *[p for p in points if p[0] > start]]
    if task >= share - 1e-12:
        return _result(
            ctx,
            Status.ON_TRACK,
            f"task share {task:.1%} ≥ time share {share:.1%} (时间过半、任务过半)",
            task=task,
            baseline=baseline,
        )
    return _behind(
        ctx,
        target,
        f"task share {task:.1%} < time share {share:.1%}",
        points,
        task,
        baseline,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Tally:
    """Counts of statuses and paces per attribute, as the evaluation reports give them."""

    by_attribute: dict[str, dict[str, int]]
    pace_by_attribute: dict[str, dict[str, int]]


def tally(indicators: Sequence[Indicator], evaluations: Sequence[Evaluation]) -> Tally:
    """Count statuses and paces per attribute (binding / expected / unspecified) and in total."""
    attr = {i.key: i.attribute.value for i in indicators}
    groups = [a.value for a in Attribute] + ["total"]
    by: dict[str, dict[str, int]] = {g: {s.value: 0 for s in Status} for g in groups}
    pace: dict[str, dict[str, int]] = {g: {p.value: 0 for p in Pace} for g in groups}
    for e in evaluations:
        for g in (attr.get(e.key, Attribute.UNSPECIFIED.value), "total"):
            by[g][e.status.value] += 1
            pace[g][e.pace.value] += 1
    return Tally(by_attribute=by, pace_by_attribute=pace)

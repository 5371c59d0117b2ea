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

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

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
class Rules:
    """The parameters of the judgements (settings ``report.*``; recorded in every report)."""

    gap_tolerance_pp: float = 2.0  # level without baseline, rate (%): close enough within this
    gap_tolerance_rel: float = 0.10  # level without baseline, amount: |gap| ÷ |target|
    trend_points: int = 3  # level without baseline: the trend uses the last this-many values

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready."""
        return {
            "gap_tolerance_pp": self.gap_tolerance_pp,
            "gap_tolerance_rel": self.gap_tolerance_rel,
            "trend_points": self.trend_points,
        }


DEFAULT_RULES = Rules()


class Rule(StrEnum):
    """Which rule produced a judgement (docs/indicators.md names each)."""

    AUTHORITY_STATUS = "authority_status"
    QUALITATIVE = "qualitative"
    NO_TARGET = "no_target"
    NO_OBSERVATION = "no_observation"
    DYNAMIC_TREND = "dynamic_trend"
    CUMULATIVE_PROGRESS = "cumulative_progress"
    LEVEL_PROGRESS = "level_progress"
    LEVEL_GAP = "level_gap"
    RELATIVE_CHANGE = "relative_change"
    CAP = "cap"


RULE_TEXT: dict[Rule, str] = {
    Rule.AUTHORITY_STATUS: "the latest observation carries an authority's status: that status",
    Rule.QUALITATIVE: "yes/no: latest value 1 → 提前完成; else a forecast decides "
    "(1 → 可以完成, 0 → 建议调整); else 待评估",
    Rule.NO_TARGET: "no numeric target: 无目标值; an authority status or a forecast is shown "
    "with its source",
    Rule.NO_OBSERVATION: "no observation up to the as-of date: 待评估",
    Rule.DYNAMIC_TREND: "least-squares trend projected to 2025-12-31 meets the target → 可以完成, "
    "else 建议调整",
    Rule.CUMULATIVE_PROGRESS: "progress share (current ÷ target, counted from plan start) vs "
    "time share; behind → the forecast decides",
    Rule.LEVEL_PROGRESS: "progress share (current − baseline) ÷ (target − baseline) vs time "
    "share; behind → the forecast decides",
    Rule.LEVEL_GAP: "no baseline: at or beyond target → 提前完成; gap within the tolerance → "
    "可以完成; beyond → 可以完成 (at risk) if the trend of the last observations reaches the "
    "target, else 建议调整",
    Rule.RELATIVE_CHANGE: "target = baseline × (1 + change); progress share vs time share",
    Rule.CAP: "must stay within the target: within now → 提前完成, or 可以完成 at risk after an "
    "earlier breach; beyond → progress share vs time share",
}


def unit_kind(unit: str) -> str:
    """``rate`` for percentages (gap in percentage points), ``amount`` otherwise (relative gap)."""
    return "rate" if unit.strip() == "%" else "amount"


QUALITATIVE_VALUES: tuple[float, ...] = (0.0, 1.0)
QUALITATIVE_MEANING = "1 (achieved 已实现), 0 (not yet 未实现), or a status"


def allowed_values(indicator: Indicator) -> tuple[float, ...] | None:
    """The only values an indicator accepts (qualitative: 0 or 1); None when any number goes."""
    return QUALITATIVE_VALUES if indicator.kind is IndicatorKind.QUALITATIVE else None


@dataclass(frozen=True, kw_only=True, slots=True)
class Evaluation:
    """The outcome for one indicator at ``as_of``, with the rule and every number that led to it."""

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
    rule: Rule = Rule.NO_OBSERVATION
    inputs: dict[str, Any] = field(default_factory=dict)
    no_target: bool = False
    status_source: str | None = None  # who supplied the status when it is not computed here

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


def meets(value: float, target: float, direction: Direction) -> bool:
    """True when ``value`` reaches ``target`` in the good direction; equality meets."""
    tol = 1e-9 * max(1.0, abs(target))  # float noise, not a margin
    if direction is Direction.UP:
        return value >= target - tol
    return value <= target + tol


def trend_projection(points: Sequence[tuple[date, float]], to: date = PLAN_END) -> float | None:
    """Least-squares line through the points, read at ``to``; None with fewer than two dates."""
    slope = trend_slope(points)
    if slope is None:
        return None
    xs = [float((d - PLAN_START).days) for d, _ in points]
    ys = [v for _, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return my + slope * (float((to - PLAN_START).days) - mx)


def trend_slope(points: Sequence[tuple[date, float]]) -> float | None:
    """Least-squares slope per day through the points; None with fewer than two dates."""
    if len({d for d, _ in points}) < 2:
        return None
    xs = [float((d - PLAN_START).days) for d, _ in points]
    ys = [v for _, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def _json(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class _Ctx:
    indicator: Indicator
    as_of: date
    share: float
    target: float | None
    values: list[Observation]
    latest: Observation | None
    forecast: Forecast | None
    rules: Rules


def evaluate(
    indicator: Indicator,
    observations: Iterable[Observation],
    as_of: date,
    forecast: Forecast | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Evaluation:
    """Classify ``indicator`` at ``as_of`` from observations and an optional user forecast.

    Observations dated after ``as_of`` and forecasts made after it are ignored, so an evaluation
    can be re-run for any past date with the same result. The result names the rule that judged
    it and its inputs (docs/indicators.md).
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
        rules=rules,
    )
    if ctx.latest is not None and ctx.latest.status is not None:
        return _authority(ctx, ctx.latest)
    if indicator.kind is IndicatorKind.QUALITATIVE:
        return _qualitative(ctx)
    if ctx.target is None:
        return _no_target(ctx)
    if not values:
        return _result(
            ctx, Status.PENDING, "no observation up to the as-of date", Rule.NO_OBSERVATION
        )
    return _numeric(ctx)


def _numeric(ctx: _Ctx) -> Evaluation:
    """A numeric target and at least one value: the rule by kind and baseline."""
    ind = ctx.indicator
    if ind.kind is IndicatorKind.DYNAMIC:
        return _dynamic(ctx)
    if ind.kind is IndicatorKind.CUMULATIVE or ind.baseline is not None:
        return _quantitative(ctx)
    return _level_gap(ctx)


def _result(
    ctx: _Ctx,
    status: Status,
    reason: str,
    rule: Rule,
    *,
    at_risk: bool = False,
    task: float | None = None,
    forecast: float | None = None,
    forecast_source: str | None = None,
    proposed: float | None = None,
    authority: bool = False,
    baseline: float | None = None,
    extra: dict[str, Any] | None = None,
    status_source: str | None = None,
) -> Evaluation:
    last = ctx.values[-1] if ctx.values else None
    base = ctx.indicator.baseline if baseline is None else baseline
    if base is None and ctx.indicator.kind is IndicatorKind.CUMULATIVE:
        base = 0.0
    inputs: dict[str, Any] = {
        "as_of": ctx.as_of,
        "time_share": round(ctx.share, 6),
        "direction": ctx.indicator.direction.value,
        "baseline": base,
        "target": ctx.target,
        "current": None if last is None else last.value,
        "current_on": None if last is None else last.on,
        "current_source": None if last is None else last.source,
    }
    if task is not None:
        inputs["task_share"] = round(task, 6)
    if ctx.forecast is not None:
        inputs["user_forecast"] = {
            "value": ctx.forecast.value,
            "made_on": ctx.forecast.made_on,
            "reason": ctx.forecast.reason,
            "proposed_target": ctx.forecast.proposed_target,
        }
    inputs.update(extra or {})
    return Evaluation(
        key=ctx.indicator.key,
        as_of=ctx.as_of,
        status=status,
        at_risk=at_risk,
        reason=reason,
        current=None if last is None else last.value,
        current_on=None if last is None else last.on,
        current_source=None if last is None else last.source,
        baseline=base,
        target=ctx.target,
        task_share=_round(task),
        time_share=round(ctx.share, 6),
        forecast=_round(forecast),
        forecast_source=forecast_source,
        proposed_target=_round(proposed),
        authority_status=authority,
        rule=rule,
        inputs=_json(inputs),
        no_target=ctx.target is None,
        status_source=status_source,
    )


def _no_target_why(ind: Indicator) -> str:
    if ind.target_change is not None:
        return (
            "no target (relative target without a 2020 baseline: enter the baseline as a "
            "local indicator)"
        )
    return "no target (the plan withholds or does not state a numeric target)"


def _authority(ctx: _Ctx, obs: Observation) -> Evaluation:
    assert obs.status is not None  # noqa: S101 - checked by the caller
    note = f": {obs.note}" if obs.note else ""
    proposed = None
    if obs.status is Status.ADJUST and ctx.forecast is not None:
        proposed = ctx.forecast.proposed_target or ctx.forecast.value
    prefix = ""
    if ctx.target is None and ctx.indicator.kind is not IndicatorKind.QUALITATIVE:
        prefix = _no_target_why(ctx.indicator) + "; "
    return _result(
        ctx,
        obs.status,
        f"{prefix}status supplied by {obs.source} on {obs.on}{note}",
        Rule.AUTHORITY_STATUS,
        authority=True,
        proposed=proposed,
        status_source=obs.source,
        extra={
            "authority": {
                "source": obs.source,
                "on": obs.on,
                "status": obs.status.value,
                "note": obs.note,
            }
        },
    )


def _no_target(ctx: _Ctx) -> Evaluation:
    why = _no_target_why(ctx.indicator)
    if ctx.forecast is not None:
        fc = ctx.forecast
        return _result(
            ctx,
            Status.NO_TARGET,
            f"{why}; the user's forecast (made {fc.made_on}) for {PLAN_END} is {_fmt(fc.value)}: "
            f"{fc.reason}",
            Rule.NO_TARGET,
            forecast=fc.value,
            forecast_source="user",
            proposed=fc.proposed_target,
            status_source=f"user forecast of {fc.made_on}",
        )
    return _result(
        ctx, Status.NO_TARGET, f"{why}; no authority status or forecast entered", Rule.NO_TARGET
    )


def _qualitative(ctx: _Ctx) -> Evaluation:
    last = ctx.values[-1] if ctx.values else None
    extra = {"allowed_values": list(QUALITATIVE_VALUES)}
    if last is not None and last.value is not None and last.value not in QUALITATIVE_VALUES:
        return _result(
            ctx,
            Status.PENDING,
            f"value {_fmt(last.value)} ({last.on}) is not an allowed value: {QUALITATIVE_MEANING}",
            Rule.QUALITATIVE,
            extra=extra,
        )
    if last is not None and last.value == 1.0:
        return _result(
            ctx,
            Status.ACHIEVED_EARLY,
            f"achieved as observed on {last.on}",
            Rule.QUALITATIVE,
            extra=extra,
        )
    if ctx.forecast is not None and ctx.forecast.value >= 1:
        return _result(
            ctx,
            Status.ON_TRACK,
            f"not yet achieved; forecast says achieved by {PLAN_END}: {ctx.forecast.reason}",
            Rule.QUALITATIVE,
            at_risk=True,
            forecast=ctx.forecast.value,
            forecast_source="user",
            extra=extra,
        )
    if ctx.forecast is not None:
        return _result(
            ctx,
            Status.ADJUST,
            f"not achieved and the forecast says it will not be: {ctx.forecast.reason}",
            Rule.QUALITATIVE,
            forecast=ctx.forecast.value,
            forecast_source="user",
            proposed=ctx.forecast.proposed_target,
            extra=extra,
        )
    return _result(
        ctx,
        Status.PENDING,
        "qualitative: enter an observation (1 achieved, 0 not yet) with the assessing authority's "
        "status, or a forecast",
        Rule.QUALITATIVE,
        extra=extra,
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
    rule: Rule,
    extra: dict[str, Any] | None = None,
) -> Evaluation:
    direction = ctx.indicator.direction
    value, source = _forecast(ctx, points)
    user_reason = f"; forecast reason: {ctx.forecast.reason}" if ctx.forecast else ""
    more = {"trend_points": points, "forecast": value, "forecast_source": source, **(extra or {})}
    if value is not None and meets(value, target, direction):
        return _result(
            ctx,
            Status.ON_TRACK,
            f"{why}, but the {source} forecast for {PLAN_END} ({_fmt(value)}) meets the target "
            f"{_fmt(target)}{user_reason}",
            rule,
            at_risk=True,
            task=task,
            forecast=value,
            forecast_source=source,
            baseline=baseline,
            extra=more,
        )
    if value is None:
        return _result(
            ctx,
            Status.PENDING,
            f"{why}; no forecast: enter one with a reason, or more observations for a trend",
            rule,
            task=task,
            baseline=baseline,
            extra=more,
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
        rule,
        task=task,
        forecast=value,
        forecast_source=source,
        proposed=proposed,
        baseline=baseline,
        extra=more,
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
        Rule.DYNAMIC_TREND,
    )


def _progress_rule(ind: Indicator) -> Rule:
    if ind.kind is IndicatorKind.CUMULATIVE:
        return Rule.CUMULATIVE_PROGRESS
    if ind.kind is IndicatorKind.RELATIVE_CHANGE:
        return Rule.RELATIVE_CHANGE
    if ind.kind is IndicatorKind.CAP:
        return Rule.CAP
    return Rule.LEVEL_PROGRESS


def _quantitative(ctx: _Ctx) -> Evaluation:
    ind, target = ctx.indicator, ctx.target
    assert target is not None  # noqa: S101 - checked by the caller
    rule = _progress_rule(ind)
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
                    rule,
                    at_risk=True,
                    extra={"breach": {"on": breaches[-1].on, "value": breaches[-1].value}},
                )
        return _result(
            ctx,
            Status.ACHIEVED_EARLY,
            f"current value {_fmt(current)} ({last.on}) meets the target {_fmt(target)}",
            rule,
        )
    baseline = ind.baseline
    if baseline is None:  # cumulative: counted from the plan start
        baseline = 0.0
    share = ctx.share
    if target == baseline:
        task = 1.0 if meets(current, target, ind.direction) else 0.0
    else:
        task = (current - baseline) / (target - baseline)
    points = _points(ctx, with_baseline=True)
    if ind.kind is IndicatorKind.CUMULATIVE and ind.baseline is None:
        points = [(BASELINE_DATE, 0.0), *points]
    if task >= share - 1e-12:
        return _result(
            ctx,
            Status.ON_TRACK,
            f"task share {task:.1%} ≥ time share {share:.1%} (时间过半、任务过半)",
            rule,
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
        rule,
    )


def _level_gap(ctx: _Ctx) -> Evaluation:
    """Level indicator without a 2020 value: the gap to the target against a tolerance."""
    ind, target, rules = ctx.indicator, ctx.target, ctx.rules
    assert target is not None  # noqa: S101 - checked by the caller
    last = ctx.values[-1]
    assert last.value is not None  # noqa: S101
    current = last.value
    kind = unit_kind(ind.unit)
    shortfall = target - current if ind.direction is Direction.UP else current - target
    if kind == "rate":
        gap, tol, gap_unit = shortfall, rules.gap_tolerance_pp, "percentage points"
    else:
        gap = shortfall / abs(target) if target else (0.0 if shortfall <= 0 else math.inf)
        tol, gap_unit = rules.gap_tolerance_rel, "of the target"
    recent = [
        (o.on, o.value) for o in ctx.values[-max(2, rules.trend_points) :] if o.value is not None
    ]
    slope = trend_slope(recent)
    extra: dict[str, Any] = {
        "unit_kind": kind,
        "gap": gap if math.isfinite(gap) else None,
        "gap_unit": gap_unit,
        "tolerance": tol,
        "trend_points": recent,
        "trend_slope_per_year": None if slope is None else slope * 365.25,
    }

    def gap_text() -> str:
        if kind == "rate":
            return f"gap {gap:.6g} pp"
        return f"gap {gap:.2%} of the target"

    if meets(current, target, ind.direction):
        return _result(
            ctx,
            Status.ACHIEVED_EARLY,
            f"current value {_fmt(current)} ({last.on}) is at or beyond the target {_fmt(target)}",
            Rule.LEVEL_GAP,
            extra=extra,
        )
    projection, source = _forecast(ctx, recent)
    extra["forecast"] = projection
    extra["forecast_source"] = source
    user_reason = f"; forecast reason: {ctx.forecast.reason}" if ctx.forecast else ""
    tol_text = f"{tol:.6g} pp" if kind == "rate" else f"{tol:.2%}"
    if gap <= tol + 1e-9:
        risk = projection is not None and not meets(projection, target, ind.direction)
        risk_text = (
            f"; the {source} forecast for {PLAN_END} ({_fmt(projection)}) misses it: at risk"
            if risk
            else ""
        )
        return _result(
            ctx,
            Status.ON_TRACK,
            f"no 2020 baseline: {_fmt(current)} ({last.on}) vs target {_fmt(target)}, "
            f"{gap_text()} within the tolerance {tol_text}{risk_text}{user_reason}",
            Rule.LEVEL_GAP,
            at_risk=risk,
            forecast=projection,
            forecast_source=source,
            extra=extra,
        )
    why = (
        f"no 2020 baseline: {_fmt(current)} ({last.on}) vs target {_fmt(target)}, "
        f"{gap_text()} beyond the tolerance {tol_text}"
    )
    if projection is not None and meets(projection, target, ind.direction):
        return _result(
            ctx,
            Status.ON_TRACK,
            f"{why}, but the {source} forecast for {PLAN_END} ({_fmt(projection)}) reaches "
            f"the target{user_reason}",
            Rule.LEVEL_GAP,
            at_risk=True,
            forecast=projection,
            forecast_source=source,
            extra=extra,
        )
    proposed = (
        ctx.forecast.proposed_target
        if ctx.forecast is not None and ctx.forecast.proposed_target is not None
        else projection
    )
    tail = (
        f"; the {source} forecast for {PLAN_END} ({_fmt(projection)}) misses it; proposed "
        f"target {_fmt(proposed)}"
        if projection is not None
        else "; a single observation gives no trend"
    )
    return _result(
        ctx,
        Status.ADJUST,
        f"{why}{tail}{user_reason}",
        Rule.LEVEL_GAP,
        forecast=projection,
        forecast_source=source,
        proposed=proposed,
        extra=extra,
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

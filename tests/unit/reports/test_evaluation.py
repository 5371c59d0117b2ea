"""The evaluation engine at every boundary of the mid-term evaluation method."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from cityops.errors import ValidationError
from reports import catalog
from reports.catalog import Attribute, Direction, Indicator, IndicatorKind
from reports.evaluation import (
    PLAN_END,
    Forecast,
    Observation,
    Pace,
    Status,
    evaluate,
    meets,
    tally,
    time_share,
    trend_projection,
)

HALF = date(2023, 7, 2)  # 913 of 1826 plan days elapsed at the end of this day: exactly half


def ind(**kw: object) -> Indicator:
    base: dict[str, object] = {
        "key": "t-1",
        "plan": "test",
        "no": 1,
        "name_zh": "测试",
        "name_en": "test",
        "category": "",
        "unit": "%",
        "direction": Direction.UP,
        "kind": IndicatorKind.LEVEL,
        "baseline": 90.0,
        "baseline_note": "",
        "target": 100.0,
        "target_change": None,
        "target_text": "",
        "attribute": Attribute.BINDING,
        "sensor_metric": None,
        "scope": "district",
        "reference_value": None,
        "reference_date": None,
    }
    base.update(kw)
    return Indicator(**base)  # type: ignore[arg-type]


def obs(
    on: date, value: float | None, *, status: Status | None = None, src: str = "t"
) -> Observation:
    return Observation(indicator="t-1", on=on, value=value, source=src, status=status)


def test_time_share_is_exactly_half_on_2023_07_02_and_one_at_plan_end() -> None:
    assert time_share(HALF) == 0.5
    assert time_share(date(2021, 1, 1)) == 1 / 1826
    assert time_share(PLAN_END) == 1.0
    assert time_share(date(2026, 10, 31)) == 1.0
    with pytest.raises(ValidationError, match="before the plan period"):
        time_share(date(2020, 12, 31))


def test_equality_meets_the_target_both_directions() -> None:
    assert meets(99.0, 99.0, Direction.UP)
    assert meets(3.0, 3.0, Direction.DOWN)
    assert not meets(98.999, 99.0, Direction.UP)
    assert not meets(3.001, 3.0, Direction.DOWN)
    e = evaluate(ind(), [obs(date(2022, 3, 1), 100.0)], HALF)
    assert e.status is Status.ACHIEVED_EARLY
    assert e.pace is Pace.AS_EXPECTED
    assert e.labels()["status_zh"] == "提前完成"


def test_task_share_exactly_equal_to_time_share_is_on_track() -> None:
    # baseline 90, target 100, value 95: task share 0.5 = time share 0.5
    e = evaluate(ind(), [obs(date(2023, 6, 30), 95.0)], HALF)
    assert e.status is Status.ON_TRACK
    assert e.task_share == 0.5
    assert e.time_share == 0.5
    assert not e.at_risk
    assert e.labels()["status_zh"] == "可以完成"
    assert e.labels()["pace_zh"] == "符合预期"


def test_just_behind_with_a_trend_that_misses_proposes_adjustment() -> None:
    # task share 0.49 < 0.5; trend from (2020-12-31, 90) to (2023-06-30, 94.9) misses 100
    e = evaluate(ind(), [obs(date(2023, 6, 30), 94.9)], HALF)
    assert e.status is Status.ADJUST
    assert e.forecast_source == "trend"
    assert e.forecast is not None
    assert e.forecast < 100
    assert e.proposed_target == e.forecast
    assert "misses the target" in e.reason
    assert e.labels()["status_zh"] == "建议调整"
    assert e.labels()["report_zh"] == "完成存在困难"
    assert e.labels()["pace_zh"] == "慢于预期"


def test_behind_but_trend_forecast_meets_is_on_track_at_risk() -> None:
    # a dip in 2021, then a fast recovery: behind the time share, but the least-squares line
    # through (2020-12-31, 90) and the observations reaches 100.31 at 2025-12-31
    points = [
        obs(date(2021, 6, 30), 84.0),
        obs(date(2021, 12, 31), 86.0),
        obs(date(2022, 12, 31), 92.0),
        obs(HALF, 94.5),
    ]
    e = evaluate(ind(), points, HALF)
    assert e.task_share == 0.45
    assert e.status is Status.ON_TRACK
    assert e.at_risk
    assert e.forecast_source == "trend"
    assert e.forecast == pytest.approx(100.3135, abs=1e-4)
    assert e.labels()["report_zh"] == "可以完成"


def test_direction_down() -> None:
    base = ind(direction=Direction.DOWN, baseline=5.0, target=3.0, unit="km")
    assert evaluate(base, [obs(date(2022, 1, 1), 3.0)], HALF).status is Status.ACHIEVED_EARLY
    on = evaluate(base, [obs(date(2023, 1, 1), 4.0)], HALF)  # task (4-5)/(3-5) = 0.5
    assert on.status is Status.ON_TRACK
    assert on.task_share == 0.5
    behind = evaluate(base, [obs(date(2023, 1, 1), 4.8)], HALF)
    assert behind.status is Status.ADJUST
    assert behind.task_share == pytest.approx(0.1)


def test_relative_target_resolves_against_the_2020_baseline() -> None:
    rel = ind(
        kind=IndicatorKind.RELATIVE_CHANGE,
        direction=Direction.DOWN,
        baseline=0.69,
        target=None,
        target_change=-0.10,
    )
    assert rel.resolved_target == 0.621
    assert evaluate(rel, [obs(date(2023, 3, 15), 0.621)], HALF).status is Status.ACHIEVED_EARLY
    e = evaluate(rel, [obs(date(2023, 3, 15), 0.69)], HALF)
    assert e.status is Status.ADJUST
    assert e.target == 0.621
    assert e.task_share == 0.0


def test_relative_target_without_baseline_and_withheld_target_give_no_target() -> None:
    no_base = ind(
        kind=IndicatorKind.RELATIVE_CHANGE, baseline=None, target=None, target_change=-0.1
    )
    e = evaluate(no_base, [obs(date(2022, 1, 1), 7.0)], HALF)
    assert e.status is Status.NO_TARGET
    assert "baseline" in e.reason
    withheld = evaluate(ind(target=None), [obs(date(2022, 1, 1), 7.0)], HALF)
    assert withheld.status is Status.NO_TARGET
    assert withheld.current == 7.0
    assert withheld.pace is Pace.NOT_ASSESSED


def test_every_shipped_indicator_evaluates_without_crashing() -> None:
    cat = catalog.build()
    assert len(cat.by_plan("cy-gov")) == 28
    assert len(cat.by_plan("bj-cm")) == 14
    results = [evaluate(i, [], HALF) for i in cat.indicators]
    assert {r.status for r in results} <= {Status.NO_TARGET, Status.PENDING}
    withheld = next(r for r in results if r.key == "cy-gov-03")
    assert withheld.status is Status.NO_TARGET


def test_dynamic_indicator_uses_trend_projection() -> None:
    dyn = ind(
        kind=IndicatorKind.DYNAMIC,
        direction=Direction.DOWN,
        baseline=None,
        target=5.0,
        reference_value=5.58,
        reference_date=date(2021, 12, 31),
    )
    falling = evaluate(dyn, [obs(date(2022, 12, 31), 5.4)], HALF)
    # line through (2021-12-31, 5.58) and (2022-12-31, 5.40): -0.18 per year, 4.86 at 2025-12-31
    assert falling.status is Status.ON_TRACK
    assert falling.forecast == pytest.approx(5.58 - 0.18 * 4, abs=0.01)
    assert falling.task_share is None
    rising = evaluate(dyn, [obs(date(2022, 12, 31), 5.7)], HALF)
    assert rising.status is Status.ADJUST
    assert rising.proposed_target == rising.forecast
    # a single reference point is not a trend
    assert evaluate(dyn, [], date(2022, 6, 1)).status is Status.PENDING


def test_authority_supplied_status_wins() -> None:
    # the value alone would meet the target; the authority says adjustment is proposed
    e = evaluate(ind(), [obs(date(2023, 1, 1), 100.0, status=Status.ADJUST, src="市城管委")], HALF)
    assert e.status is Status.ADJUST
    assert e.authority_status
    assert "市城管委" in e.reason
    on = evaluate(ind(), [obs(date(2023, 1, 1), 91.0, status=Status.ON_TRACK)], HALF)
    assert on.status is Status.ON_TRACK


def test_forecast_override_carries_its_reason() -> None:
    behind = [obs(date(2023, 6, 30), 92.0)]
    ok = Forecast(
        indicator="t-1", made_on=date(2023, 6, 1), value=100.5, reason="new lamps in 2024"
    )
    e = evaluate(ind(), behind, HALF, ok)
    assert e.status is Status.ON_TRACK
    assert e.at_risk
    assert e.forecast_source == "user"
    assert "new lamps in 2024" in e.reason
    miss = Forecast(
        indicator="t-1",
        made_on=date(2023, 6, 1),
        value=96.0,
        reason="budget cut",
        proposed_target=97.0,
    )
    a = evaluate(ind(), behind, HALF, miss)
    assert a.status is Status.ADJUST
    assert a.proposed_target == 97.0
    assert "budget cut" in a.reason
    later = replace(ok, made_on=date(2023, 8, 1))  # made after the as-of date: ignored
    assert evaluate(ind(), behind, HALF, later).forecast_source == "trend"
    with pytest.raises(ValidationError, match="reason"):
        evaluate(ind(), behind, HALF, replace(ok, reason=" "))


def test_observations_after_as_of_are_ignored() -> None:
    points = [obs(date(2022, 1, 1), 91.0), obs(date(2024, 1, 1), 100.0)]
    assert evaluate(ind(), points, HALF).current == 91.0
    assert evaluate(ind(), points, date(2024, 1, 1)).status is Status.ACHIEVED_EARLY


def test_cumulative_counts_from_zero() -> None:
    cum = ind(kind=IndicatorKind.CUMULATIVE, baseline=None, target=270.0, unit="alleys")
    e = evaluate(cum, [obs(date(2023, 6, 30), 135.0)], HALF)
    assert e.status is Status.ON_TRACK
    assert e.task_share == 0.5


def test_cap_breach_earlier_in_the_period_is_flagged() -> None:
    cap = ind(kind=IndicatorKind.CAP, direction=Direction.DOWN, baseline=0.84, target=0.7)
    held = evaluate(cap, [obs(date(2022, 1, 1), 0.7), obs(date(2023, 1, 1), 0.6)], HALF)
    assert held.status is Status.ACHIEVED_EARLY
    breached = evaluate(cap, [obs(date(2022, 1, 1), 0.9), obs(date(2023, 1, 1), 0.6)], HALF)
    assert breached.status is Status.ON_TRACK
    assert breached.at_risk
    assert "2022-01-01" in breached.reason


def test_qualitative_indicator() -> None:
    q = ind(kind=IndicatorKind.QUALITATIVE, baseline=None, target=None)
    assert evaluate(q, [], HALF).status is Status.PENDING
    assert evaluate(q, [obs(date(2022, 1, 1), 1.0)], HALF).status is Status.ACHIEVED_EARLY
    f = Forecast(indicator="t-1", made_on=date(2022, 2, 1), value=1.0, reason="review in 2024")
    assert evaluate(q, [obs(date(2022, 1, 1), 0.0)], HALF, f).status is Status.ON_TRACK


def test_trend_projection_known_line() -> None:
    pts = [(date(2021, 1, 1), 0.0), (date(2022, 1, 1), 365.0)]
    assert trend_projection(pts, date(2023, 1, 1)) == pytest.approx(730.0)
    assert trend_projection(pts[:1]) is None


def test_tally_counts_per_attribute_and_pace() -> None:
    a = ind(key="a", attribute=Attribute.BINDING)
    b = ind(key="b", attribute=Attribute.EXPECTED)
    c = ind(key="c", attribute=Attribute.EXPECTED, target=None)
    evs = [
        evaluate(a, [Observation(indicator="a", on=HALF, value=100.0, source="t")], HALF),
        evaluate(b, [Observation(indicator="b", on=HALF, value=90.5, source="t")], HALF),
        evaluate(c, [], HALF),
    ]
    t = tally([a, b, c], evs)
    assert t.by_attribute["binding"]["achieved_early"] == 1
    assert t.by_attribute["expected"]["adjust"] == 1
    assert t.by_attribute["expected"]["no_target"] == 1
    assert t.by_attribute["total"] == {
        "achieved_early": 1,
        "on_track": 0,
        "adjust": 1,
        "no_target": 1,
        "pending": 0,
    }
    assert t.pace_by_attribute["total"]["as_expected"] == 1
    assert t.pace_by_attribute["total"]["slower"] == 1

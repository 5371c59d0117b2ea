"""Known answers for every judgement rule and its edges (docs/indicators.md, issue 14)."""

from __future__ import annotations

from datetime import date

import pytest

from cityops.errors import ValidationError
from reports import catalog, observations
from reports.catalog import Attribute, Direction, Indicator, IndicatorKind
from reports.evaluation import (
    Forecast,
    Observation,
    Rule,
    Rules,
    Status,
    evaluate,
    time_share,
)

HALF = date(2023, 7, 2)
MID = date(2023, 6, 30)


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
        "baseline": None,
        "baseline_note": "",
        "target": 97.0,
        "target_change": None,
        "target_text": "",
        "attribute": Attribute.UNSPECIFIED,
        "sensor_metric": None,
        "scope": "district",
        "reference_value": None,
        "reference_date": None,
    }
    base.update(kw)
    return Indicator(**base)  # type: ignore[arg-type]


def obs(on: date, value: float | None, status: Status | None = None, src: str = "t") -> Observation:
    return Observation(indicator="t-1", on=on, value=value, source=src, status=status)


def test_time_share_is_exactly_half() -> None:
    assert time_share(HALF) == 0.5


# -- level without a baseline: gap to target against the tolerance --------------------------


def test_level_gap_rate_exactly_on_target_and_beyond_is_achieved_early() -> None:
    for value in (97.0, 98.5):
        e = evaluate(ind(), [obs(MID, value)], HALF)
        assert e.status is Status.ACHIEVED_EARLY
        assert e.rule is Rule.LEVEL_GAP
        assert e.inputs["target"] == 97.0


def test_level_gap_rate_exactly_at_the_tolerance_is_on_track() -> None:
    e = evaluate(ind(), [obs(MID, 95.0)], HALF)  # 2.0 pp below 97: the default tolerance
    assert e.status is Status.ON_TRACK
    assert not e.at_risk
    assert e.inputs["gap"] == 2.0
    assert e.inputs["tolerance"] == 2.0
    assert e.inputs["unit_kind"] == "rate"
    assert "within the tolerance 2 pp" in e.reason


def test_level_gap_rate_beyond_the_tolerance_single_value_is_adjust() -> None:
    e = evaluate(ind(), [obs(MID, 94.9)], HALF)
    assert e.status is Status.ADJUST
    assert "single observation gives no trend" in e.reason
    assert e.inputs["gap"] == pytest.approx(2.1)


def test_level_gap_beyond_tolerance_but_trend_reaches_target_is_on_track_at_risk() -> None:
    # 90 → 94.9 in one year: +4.9 per year, about 107 at 2025-12-31
    e = evaluate(ind(), [obs(date(2022, 6, 30), 90.0), obs(MID, 94.9)], HALF)
    assert e.status is Status.ON_TRACK
    assert e.at_risk
    assert e.forecast_source == "trend"
    assert e.forecast is not None
    assert e.forecast > 97
    assert len(e.inputs["trend_points"]) == 2


def test_level_gap_beyond_tolerance_and_falling_trend_is_adjust_with_proposal() -> None:
    e = evaluate(ind(), [obs(date(2022, 6, 30), 95.0), obs(MID, 94.0)], HALF)
    assert e.status is Status.ADJUST
    assert e.proposed_target == e.forecast
    assert e.inputs["trend_slope_per_year"] < 0


def test_level_gap_within_tolerance_with_worsening_trend_is_on_track_at_risk() -> None:
    e = evaluate(ind(), [obs(date(2022, 6, 30), 96.5), obs(MID, 96.0)], HALF)
    assert e.status is Status.ON_TRACK
    assert e.at_risk


def test_level_gap_trend_uses_only_the_last_points() -> None:
    pts = [obs(date(2021, 6, 30), 50.0), obs(date(2022, 6, 30), 93.0), obs(MID, 94.0)]
    two = evaluate(ind(), pts, HALF, rules=Rules(trend_points=2))
    assert [p[0] for p in two.inputs["trend_points"]] == ["2022-06-30", "2023-06-30"]
    # 93 → 94 per year: 96.5 at 2025-12-31 misses 97
    assert two.status is Status.ADJUST


def test_level_gap_amount_uses_the_relative_gap() -> None:
    cap = ind(unit="t/d", target=4600.0)
    at = evaluate(cap, [obs(MID, 4140.0)], HALF)  # exactly 10 % short
    assert at.status is Status.ON_TRACK
    assert at.inputs["unit_kind"] == "amount"
    assert at.inputs["gap"] == pytest.approx(0.1)
    assert evaluate(cap, [obs(MID, 4139.0)], HALF).status is Status.ADJUST
    assert evaluate(cap, [obs(MID, 4600.0)], HALF).status is Status.ACHIEVED_EARLY
    # a tighter setting changes the answer and is recorded
    tight = evaluate(cap, [obs(MID, 4140.0)], HALF, rules=Rules(gap_tolerance_rel=0.05))
    assert tight.status is Status.ADJUST
    assert tight.inputs["tolerance"] == 0.05


def test_level_gap_direction_down() -> None:
    accidents = ind(unit="accidents per 100 km", direction=Direction.DOWN, target=0.7)
    assert evaluate(accidents, [obs(MID, 0.7)], HALF).status is Status.ACHIEVED_EARLY
    assert evaluate(accidents, [obs(MID, 0.5)], HALF).status is Status.ACHIEVED_EARLY
    assert evaluate(accidents, [obs(MID, 0.77)], HALF).status is Status.ON_TRACK  # 10 % above
    assert evaluate(accidents, [obs(MID, 0.78)], HALF).status is Status.ADJUST


# -- progress rules ------------------------------------------------------------------------


def test_cumulative_exactly_half_time_half_task_is_on_track() -> None:
    cum = ind(kind=IndicatorKind.CUMULATIVE, unit="alleys", baseline=0.0, target=270.0)
    e = evaluate(cum, [obs(MID, 135.0)], HALF)
    assert (e.status, e.rule, e.task_share, e.time_share) == (
        Status.ON_TRACK,
        Rule.CUMULATIVE_PROGRESS,
        0.5,
        0.5,
    )
    behind = evaluate(cum, [obs(MID, 134.0)], HALF)
    assert behind.status in (Status.ON_TRACK, Status.ADJUST)
    assert behind.inputs["task_share"] < 0.5


def test_level_with_baseline_and_relative_change_rules() -> None:
    lvl = ind(baseline=90.0, target=100.0)
    e = evaluate(lvl, [obs(MID, 95.0)], HALF)
    assert (e.status, e.rule, e.task_share) == (Status.ON_TRACK, Rule.LEVEL_PROGRESS, 0.5)
    rel = catalog.build().get("cy-gov-25")
    r = evaluate(rel, [Observation(indicator="cy-gov-25", on=MID, value=0.6555, source="t")], HALF)
    # 0.69 → 0.621: halfway is 0.6555
    assert (r.status, r.rule, r.task_share) == (Status.ON_TRACK, Rule.RELATIVE_CHANGE, 0.5)
    assert r.inputs["target"] == pytest.approx(0.621)


# -- qualitative -----------------------------------------------------------------------------


def test_yes_no_indicator_refuses_other_values_at_import_with_line_and_allowed_values() -> None:
    cat = catalog.build()
    text = (
        "indicator,observed_on,value,status,source,note,scope\n"
        "cy-gov-09,2023-06-30,18.2,,区城管委,,\n"
        "cy-gov-02,2023-06-30,87.5,,区城管委,,\n"
    )
    with pytest.raises(ValidationError) as err:
        observations.parse_observations_csv(cat, text)
    message = str(err.value)
    assert "line 3" in message
    assert "cy-gov-02" in message
    assert "1 (achieved" in message
    assert "0 (not yet" in message
    ok = observations.parse_observations_csv(
        cat,
        "indicator,observed_on,value,status,source\n"
        "cy-gov-02,2023-06-30,1,,区城管委\ncy-gov-02,2023-05-30,0,,区城管委\n"
        "cy-gov-02,2023-04-30,,可以完成,区城管委\n",
    )
    assert len(ok) == 3


def test_yes_no_value_stored_before_validation_is_not_scored() -> None:
    q = ind(kind=IndicatorKind.QUALITATIVE, target=None, unit="")
    e = evaluate(q, [obs(MID, 87.5)], HALF)
    assert e.status is Status.PENDING
    assert e.rule is Rule.QUALITATIVE
    assert "not an allowed value" in e.reason
    assert evaluate(q, [obs(MID, 1.0)], HALF).status is Status.ACHIEVED_EARLY
    assert evaluate(q, [obs(MID, 0.0)], HALF).status is Status.PENDING


# -- withheld / missing targets -------------------------------------------------------------


def test_withheld_target_uses_authority_status_and_names_it() -> None:
    withheld = catalog.build().get("cy-gov-03")
    e = evaluate(
        withheld,
        [
            Observation(
                indicator="cy-gov-03",
                on=MID,
                value=300.0,
                source="区规划自然资源分局",
                status=Status.ON_TRACK,
            )
        ],
        HALF,
    )
    assert e.status is Status.ON_TRACK
    assert e.no_target
    assert e.rule is Rule.AUTHORITY_STATUS
    assert e.status_source == "区规划自然资源分局"
    assert "no target" in e.reason
    assert e.inputs["authority"]["source"] == "区规划自然资源分局"


def test_withheld_target_with_a_forecast_says_no_target_and_quotes_it() -> None:
    withheld = catalog.build().get("cy-gov-03")
    fc = Forecast(indicator="cy-gov-03", made_on=MID, value=520.0, reason="two campaigns a year")
    e = evaluate(
        withheld, [Observation(indicator="cy-gov-03", on=MID, value=300.0, source="t")], HALF, fc
    )
    assert e.status is Status.NO_TARGET
    assert e.rule is Rule.NO_TARGET
    assert e.forecast == 520.0
    assert e.forecast_source == "user"
    assert "two campaigns a year" in e.reason
    bare = evaluate(withheld, [], HALF)
    assert bare.status is Status.NO_TARGET
    assert "no authority status or forecast" in bare.reason


def test_every_judgement_carries_rule_and_inputs() -> None:
    cat = catalog.build()
    for i in cat.indicators:
        e = evaluate(i, [], HALF)
        assert isinstance(e.rule, Rule)
        assert e.inputs["as_of"] == "2023-07-02"
        assert e.inputs["time_share"] == 0.5

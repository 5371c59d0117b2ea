"""Rules files: defaults load; bad files fail naming rule and field; reload keeps the old set."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.rules import (
    GroupRule,
    Op,
    RuleHolder,
    RulesError,
    ThresholdRule,
    load_rules,
    parse_duration,
    parse_rules,
)

HEAD = "version: 1\nrules:\n"


def test_defaults_cover_every_kind_and_rule_type() -> None:
    rs = load_rules()
    names = {r.name for r in rs.rules}
    for expected in (
        "lamp_off_while_due",
        "lamp_on_in_daylight",
        "lamp_group_outage",
        "cover_open",
        "cover_displaced",
        "manhole_overflow",
        "manhole_low_battery",
        "room_below_standard",
        "compound_cooling",
        "charger_faulted",
        "charger_stuck_finishing",
        "charger_site_offline",
        "device_silent",
        "area_lighting_rate_low",
        "complaint_spike",
    ):
        assert expected in names
    assert {r.type for r in rs.rules} == {
        "threshold",
        "state",
        "nodata",
        "anomaly",
        "schedule",
        "group",
        "aggregate",
        "complaint_spike",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            " - name: a\n   type: threshold\n   kind: manhole\n   field: battery_pct\n   op: '<'\n"
            "   value: 15\n   clear: 10\n",
            "rules[0] 'a': clear: must be at or above value",
        ),
        (
            " - name: a\n   type: anomaly\n   kind: heating\n   field: temperature_c\n"
            "   score: 7\n   clear: 7\n",
            "rules[0] 'a': clear: must be below score",
        ),
        (
            " - name: a\n   type: anomaly\n   kind: heating\n   field: humidity_pct\n   score: 7\n",
            "the stream core scores 'temperature_c' of a heating, not 'humidity_pct'",
        ),
        (
            " - name: a\n   type: anomaly\n   kind: heating\n   field: temperature_c\n"
            "   score: 7\n   samples: 3\n",
            "samples",
        ),
        (
            " - name: a\n   type: state\n   kind: charger\n   field: status\n   values: [Broken]\n",
            "rules[0] 'a': values: ['Broken'] not allowed",
        ),
        (
            " - name: a\n   type: state\n   kind: manhole\n   field: cover_open\n"
            "   values: [open]\n",
            "is boolean",
        ),
        (
            " - name: a\n   type: threshold\n   kind: heating\n   field: temp\n   op: '<'\n"
            "   value: 1\n",
            "'temp' is not a heating field",
        ),
        (
            " - name: ok\n   type: nodata\n - name: b\n   type: nodata\n   for: soon\n",
            "rules[1] 'b': for: not a duration",
        ),
        (" - name: a\n   type: nodata\n   colour: red\n", "rules[0] 'a': colour: Extra inputs"),
        (" - name: a\n   type: telepathy\n", "rules[0] 'a'"),
        (" - name: Bad Name\n   type: nodata\n", "rules[0] 'Bad Name': name: use lower-case"),
        (" - name: a\n   type: nodata\n - name: a\n   type: nodata\n", "used twice"),
        (
            " - name: g\n   type: group\n   kind: charger\n   group_attribute: site_id\n"
            "   member_rule: nope\n",
            "member_rule 'nope' is not a rule",
        ),
        (
            " - name: g\n   type: group\n   kind: charger\n   group_attribute: road\n"
            "   member_rule: g\n",
            "group_attribute: 'road' is not an attribute of a charger",
        ),
        (
            " - name: s\n   type: schedule\n   kind: heating\n   condition: off_while_due\n",
            "schedule rules apply to streetlight",
        ),
        (
            " - name: m\n   type: nodata\n - name: g\n   type: group\n   kind: charger\n"
            "   group_attribute: site_id\n   member_rule: m\n   inhibits_members: false\n"
            "   hold_members: 5m\n",
            "rules[1] 'g': hold_members: only applies when inhibits_members is true",
        ),
        (
            " - name: m\n   type: nodata\n - name: g\n   type: group\n   kind: charger\n"
            "   group_attribute: site_id\n   member_rule: m\n   hold_members: -5m\n",
            "rules[1] 'g': hold_members:",
        ),
    ],
)
def test_bad_rules_name_rule_and_field(body: str, message: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(HEAD + body, "test.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("test.yaml: ")


def test_version_and_shape_errors() -> None:
    with pytest.raises(RulesError, match="unsupported rules file version 2"):
        parse_rules("version: 2\nrules: []\n")
    with pytest.raises(RulesError, match="expected a mapping"):
        parse_rules("- a\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        parse_rules("version: [1\n")


def test_threshold_hysteresis_edges() -> None:
    rs = parse_rules(
        HEAD + " - name: low\n   type: threshold\n   kind: manhole\n"
        "   field: battery_pct\n   op: '<'\n   value: 15\n   clear: 20\n"
    )
    rule = rs.rules[0]
    assert isinstance(rule, ThresholdRule)
    assert rule.op is Op.LT
    assert rule.breached(14.9)
    assert not rule.breached(15.0)  # equality is not below
    assert not rule.cleared(15.0)  # inside the band: neither
    assert not rule.cleared(19.99)
    assert rule.cleared(20.0)
    le = parse_rules(
        HEAD + " - name: le\n   type: threshold\n   kind: manhole\n"
        "   field: battery_pct\n   op: '<='\n   value: 15\n   clear: 15\n"
    ).rules[0]
    assert isinstance(le, ThresholdRule)
    assert le.breached(15.0)
    assert not le.cleared(15.0)
    assert le.cleared(15.1)


def test_durations() -> None:
    assert parse_duration("90s").total_seconds() == 90
    assert parse_duration("2h").total_seconds() == 7200
    assert parse_duration(30).total_seconds() == 30
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("2 weeks")


def test_reload_keeps_old_rules_when_new_file_is_bad(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(HEAD + " - name: a\n   type: nodata\n", encoding="utf-8")
    holder = RuleHolder(f)
    f.write_text(HEAD + " - name: a\n   type: nodata\n   intervals: 0\n", encoding="utf-8")
    error = holder.reload()
    assert error is not None
    assert "rules[0] 'a': intervals" in error
    assert [r.name for r in holder.rules.rules] == ["a"]
    f.write_text(HEAD + " - name: b\n   type: nodata\n", encoding="utf-8")
    assert holder.reload() is None
    assert [r.name for r in holder.rules.rules] == ["b"]


def test_group_rule_links() -> None:
    rule = load_rules().by_name("lamp_group_outage")
    assert isinstance(rule, GroupRule)
    assert rule.member_rule == "lamp_off_while_due"

"""The routing file: validated at load, errors name the item and the field; matching."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from alerts.notify.routes import (
    MqttReceiver,
    RoutesError,
    load_routes,
    parse_routes,
)
from alerts.rules import Severity
from tests.unit.notify.helpers import notice

GOOD = """
version: 1
defaults:
  group_wait: 10s
receivers:
  - name: desk
    type: webhook
    url: http://127.0.0.1:9/hook
  - name: boss
    type: email
    smtp_host: 127.0.0.1
    from: cityops@ops.example
    to: [boss@ops.example]
  - name: feed
    type: mqtt
routes:
  - name: covers
    match: {kind: manhole, severity: [critical]}
    receivers: [desk]
    group_by: [area_code]
    repeat_interval: 30m
    escalation:
      - escalate_after: 1h
        receivers: [boss]
  - name: everything
    receivers: [feed]
"""


def test_shipped_default_routes_load() -> None:
    config = load_routes()
    assert [r.name for r in config.receivers] == ["alerts_feed"]
    feed = config.receiver("alerts_feed")
    assert isinstance(feed, MqttReceiver)
    assert feed.qos == 1
    assert feed.topic_root == "cityops/v1"
    route = config.routes_for(notice(1))[0]
    assert config.timing(route).group_wait == timedelta(0)


def test_a_good_file_gives_timing_from_route_then_defaults() -> None:
    config = parse_routes(GOOD)
    covers = config.routes[0]
    timing = config.timing(covers)
    assert timing.group_by == ("area_code",)
    assert timing.group_wait == timedelta(seconds=10)  # from defaults
    assert timing.repeat_interval == timedelta(minutes=30)  # the route's own
    assert timing.group_interval == timedelta(minutes=5)  # built-in default
    assert covers.escalation[0].escalate_after == timedelta(hours=1)


def test_first_match_wins_unless_continue() -> None:
    config = parse_routes(GOOD)
    cover = notice(1, kind="manhole", severity=Severity.CRITICAL)
    assert [r.name for r in config.routes_for(cover)] == ["covers"]
    lamp = notice(2)
    assert [r.name for r in config.routes_for(lamp)] == ["everything"]
    # A manhole alert that is not critical falls through to the catch-all.
    warning = notice(3, kind="manhole", severity=Severity.WARNING)
    assert [r.name for r in config.routes_for(warning)] == ["everything"]
    cont = parse_routes(GOOD.replace("receivers: [desk]", "receivers: [desk]\n    continue: true"))
    assert [r.name for r in cont.routes_for(cover)] == ["covers", "everything"]


def test_match_on_area_and_labels() -> None:
    text = GOOD.replace(
        "match: {kind: manhole, severity: [critical]}",
        "match: {area_code: [110105001, '110105002'], labels: {road: 朝阳路}}",
    )
    text = text.replace("to: [boss@ops.example]", "to: [boss@ops.example]")
    config = parse_routes(text.replace("[110105001,", "['110105001',"))
    hit = notice(1, area="110105002", road="朝阳路")
    other_road = notice(2, area="110105002", road="朝阳北路")
    other_area = notice(3, area="110105009", road="朝阳路")
    assert config.routes_for(hit)[0].name == "covers"
    assert config.routes_for(other_road)[0].name == "everything"
    assert config.routes_for(other_area)[0].name == "everything"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "receivers: [desk]",
            "receivers: [dsek]",
            "routes[0] 'covers': receivers: unknown receiver(s) ['dsek']",
        ),
        (
            "        receivers: [boss]",
            "        receivers: [bos]",
            "routes[0] 'covers': escalation[0].receivers: unknown receiver(s) ['bos']",
        ),
        (
            "url: http://127.0.0.1:9/hook",
            "url: ftp://127.0.0.1/hook",
            "receivers[0] 'desk': url: 'ftp://127.0.0.1/hook' is not an http(s) URL",
        ),
        (
            "to: [boss@ops.example]",
            "to: [boss]",
            "receivers[1] 'boss': to: not mail addresses: ['boss']",
        ),
        (
            "    type: mqtt",
            "    type: pager",
            "receivers[2] 'feed': Input tag 'pager' found using 'type'",
        ),
        (
            "repeat_interval: 30m",
            "repeat_interval: soon",
            "routes[0] 'covers': repeat_interval: not a duration: 'soon'",
        ),
        (
            "repeat_interval: 30m",
            "repeat_intervall: 30m",
            "routes[0] 'covers': repeat_intervall: Extra inputs are not permitted",
        ),
        (
            "      - escalate_after: 1h",
            "      - escalate_after: 0s",
            "routes[0] 'covers': escalation: escalate_after must be above 0",
        ),
        (
            "match: {kind: manhole, severity: [critical]}",
            "match: {kind: manhole, severity: [urgent]}",
            "routes[0] 'covers': match.severity.0: Input should be",
        ),
        ("version: 1", "version: 2", "version: unsupported routes file version 2"),
    ],
)
def test_bad_files_name_the_item_and_field(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(RoutesError) as err:
        parse_routes(GOOD.replace(old, new, 1), "routes.yaml")
    assert str(err.value).startswith("routes.yaml: ")
    assert expected in str(err.value)


def test_duplicate_receiver_names_and_increasing_escalation() -> None:
    with pytest.raises(RoutesError, match=r"receivers: names used twice: \['desk'\]"):
        parse_routes(GOOD.replace("name: boss", "name: desk"))
    two_levels = GOOD.replace(
        "        receivers: [boss]",
        "        receivers: [boss]\n      - escalate_after: 30m\n        receivers: [desk]",
    )
    with pytest.raises(RoutesError, match="escalate_after must increase"):
        parse_routes(two_levels)


def test_not_yaml_and_not_a_mapping() -> None:
    with pytest.raises(RoutesError, match="not valid YAML"):
        parse_routes("version: [1", "r.yaml")
    with pytest.raises(RoutesError, match="expected a mapping"):
        parse_routes("- 1\n- 2\n", "r.yaml")


def test_missing_file_is_a_routes_error(tmp_path: Path) -> None:
    with pytest.raises(RoutesError, match="cannot read routes file"):
        load_routes(tmp_path / "nope.yaml")
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD, encoding="utf-8")
    assert load_routes(path).routes[1].name == "everything"

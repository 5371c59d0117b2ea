"""Scenario and registry generation: sizes, determinism, validity under the registry import."""

from __future__ import annotations

import csv
import io
from collections import Counter

import pytest

from cityops import registry
from simulators import scenario

REFERENCE_CODES = {a.code for a in scenario.reference_areas()}


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def pilot() -> scenario.Scenario:
    return scenario.generate(scenario.scenario_spec("pilot"), seed=7)


def test_pilot_matches_the_district_pilot(pilot: scenario.Scenario) -> None:
    rows = _rows(scenario.registry_csv_text(pilot))
    kinds = Counter(r["kind"] for r in rows)
    assert kinds["manhole"] == 300
    assert 3_000 <= kinds["streetlight"] <= 4_000
    assert 200 <= kinds["heating"] <= 900
    assert 200 <= kinds["charger"] <= 900
    covers = [r for r in rows if r["kind"] == "manhole"]
    roads = Counter(r["road"] for r in covers)
    assert len(roads) == 10
    assert {"朝阳路", "朝阳北路", "通惠河北路"} <= set(roads)


def test_every_row_passes_the_registry_validation(pilot: scenario.Scenario) -> None:
    text = scenario.registry_csv_text(pilot)
    errors = []
    for record in registry.parse_records(text, "csv"):
        try:
            registry.validate_device(record, REFERENCE_CODES)
        except Exception as err:  # collect every problem, not just the first
            errors.append((record.location, str(err)))
    assert errors == []


def test_layout_is_plausible(pilot: scenario.Scenario) -> None:
    rows = _rows(scenario.registry_csv_text(pilot))
    ids = [r["device_id"] for r in rows]
    assert len(ids) == len(set(ids))
    for r in rows:
        assert r["area_code"] in REFERENCE_CODES
        # The district box of domain.md, with a little room for generated neighbourhoods.
        assert 116.30 <= float(r["lon"]) <= 116.70, r
        assert 39.75 <= float(r["lat"]) <= 40.15, r
    lamps = [r for r in rows if r["kind"] == "streetlight"]
    mains = [r for r in lamps if r["schedule_class"] == "mains"]
    solar = [r for r in lamps if r["schedule_class"] == "solar"]
    assert mains
    assert solar
    assert all(r["gateway_id"] == r["cabinet_id"] and r["gateway_id"] for r in mains)
    assert all(r["gateway_id"] == "" for r in solar)
    per_cabinet = Counter(r["cabinet_id"] for r in mains)
    assert max(per_cabinet.values()) <= 60
    rooms = [r for r in rows if r["kind"] == "heating"]
    assert all(r["compound"] and r["building"] and r["heat_company"] for r in rooms)
    chargers = [r for r in rows if r["kind"] == "charger"]
    assert all(r["site_id"] and r["public"] in ("true", "false") for r in chargers)


def test_same_seed_same_registry_different_seed_different() -> None:
    spec = scenario.scenario_spec("district", devices=3_000)
    a = scenario.registry_csv_text(scenario.generate(spec, seed=1))
    b = scenario.registry_csv_text(scenario.generate(spec, seed=1))
    c = scenario.registry_csv_text(scenario.generate(spec, seed=2))
    assert a == b
    assert a != c


def test_district_and_city_sizes() -> None:
    district = scenario.scenario_spec("district")
    assert 20_000 <= district.total <= 100_000
    assert scenario.scenario_spec("city").total == 1_000_000
    small_city = scenario.generate(scenario.scenario_spec("city", devices=20_000), seed=3)
    assert small_city.total == 20_000
    kinds = {k: len(t) for k, t in small_city.tables.items()}
    assert kinds[max(kinds, key=lambda k: kinds[k])] == kinds[scenario.Kind.CHARGER]


def test_registry_records_match_the_csv(pilot: scenario.Scenario) -> None:
    records = list(scenario.registry_records(pilot))
    rows = _rows(scenario.registry_csv_text(pilot))
    assert len(records) == len(rows) == pilot.total
    assert dict(records[10].values) == rows[10]


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario.scenario_spec("metropolis")

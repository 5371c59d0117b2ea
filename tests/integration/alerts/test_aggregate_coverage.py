"""Aggregate rules judge complete hours with enough coverage: the first hour of a fresh start and
an hour without data never read as a lighting rate of 0 (issue 19)."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest

from alerts.model import NoticeState
from tests.integration.alerts.conftest import NIGHT, Harness, minutes

pytestmark = pytest.mark.pg


def _hour(
    harness: Harness, area: str, hour: datetime, rate: tuple[float, float], covered: float
) -> None:
    """One area-hour: lighting_rate ``rate`` (lit, scheduled) and its coverage share."""
    samples = 0 if covered == 0 else 100
    with psycopg.connect(harness.dsn) as conn:
        conn.execute(
            "INSERT INTO rates_hourly VALUES (%s, 'streetlight', 'lighting_rate', %s, %s, %s, %s)",
            (area, hour, rate[0], rate[1], samples),
        )
        conn.execute(
            "INSERT INTO rates_hourly VALUES "
            "(%s, 'streetlight', 'lighting_coverage', %s, %s, %s, %s)",
            (area, hour, covered * rate[1], rate[1], samples),
        )


def _low_areas(harness: Harness, at: datetime) -> set[str | None]:
    return {
        n.labels.get("area_code")
        for n in harness.tick(at)
        if n.state is NoticeState.FIRING and n.rule == "area_lighting_rate_low"
    }


def test_the_first_hour_of_a_fresh_start_is_not_judged(harness: Harness) -> None:
    # The engine started at NIGHT (the top of an hour, as the demo's simulated time does): the
    # lamps' first reports come in over the first minutes, so that hour reads low. Not an alert.
    _hour(harness, "CY-JW", NIGHT, (600, 1000), covered=0.62)
    assert _low_areas(harness, NIGHT + timedelta(hours=1, minutes=1)) == set()
    # The next hour is complete and covered: a real shortfall there fires.
    _hour(harness, "CY-JW", NIGHT + timedelta(hours=1), (900, 1000), covered=1.0)
    assert _low_areas(harness, NIGHT + timedelta(hours=2, minutes=1)) == {"CY-JW"}


def test_an_hour_without_data_is_no_rate_of_zero(harness: Harness) -> None:
    before = NIGHT - timedelta(hours=1)  # complete, before the engine started
    _hour(harness, "CY-JW", before, (0, 1000), covered=0.0)  # nothing reported: unknown
    _hour(harness, "CY-CW", before, (10, 1000), covered=0.2)  # barely observed: unknown
    _hour(harness, "CY-HJL", before, (900, 1000), covered=0.95)  # observed, and poor
    assert _low_areas(harness, NIGHT + minutes(1)) == {"CY-HJL"}


def test_the_hour_in_progress_is_not_judged(harness: Harness) -> None:
    # The hour ends at NIGHT + 2h; a minute before that it is still in progress.
    hour = NIGHT + timedelta(hours=1)
    _hour(harness, "CY-JW", hour, (500, 1000), covered=1.0)
    assert _low_areas(harness, hour + minutes(59)) == set()
    assert _low_areas(harness, hour + minutes(61)) == {"CY-JW"}

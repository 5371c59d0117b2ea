"""Time-range and cursor checks the routers share, the error translation and route labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from alerts.cases import CaseError
from alerts.store import AlertError
from api.errors import ApiError, from_domain
from api.metrics import route_template
from api.routers.common import check_range, check_time, int_cursor, make_cursor, split_cursor
from cityops.errors import ValidationError


def test_check_time_needs_a_zone_and_a_sane_year() -> None:
    east8 = timezone(timedelta(hours=8))
    assert check_time(datetime(2026, 1, 1, 8, tzinfo=east8), "start") == datetime(
        2026, 1, 1, tzinfo=UTC
    )
    for bad in (
        datetime(2026, 1, 1),  # noqa: DTZ001 - naive on purpose
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14))),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
    ):
        with pytest.raises(ApiError) as err:
            check_time(bad, "start")
        assert err.value.status == 422
        assert err.value.message.startswith("start:")


def test_check_range_orders() -> None:
    a = datetime(2026, 1, 1, tzinfo=UTC)
    assert check_range(a, a + timedelta(hours=1)) == (a, a + timedelta(hours=1))
    with pytest.raises(ApiError, match="end: must be after start"):
        check_range(a, a)


def test_cursors_round_trip_and_reject_garbage() -> None:
    when = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert split_cursor(make_cursor(when, "HT-1|x")) == (when, "HT-1|x")
    assert int_cursor("42") == 42
    assert int_cursor(None) is None
    assert split_cursor(None) is None
    for bad in ("", "x", "2026-01-01", "2026-01-01T00:00:00|a", "99999-01-01T00:00:00Z|a"):
        with pytest.raises(ApiError):
            split_cursor(bad)
    for bad in ("-1", "1e3", "9" * 19, ""):
        with pytest.raises(ApiError):
            int_cursor(bad)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (AlertError("there is no alert 7"), 404),
        (AlertError("alert 7 is already acknowledged"), 409),
        (AlertError("assignee: must not be empty"), 422),
        (CaseError("a case cannot move from detected (发现) to handled (处置)"), 409),
        (ValidationError("lat: 91 is above the maximum 90", "lat"), 422),
    ],
)
def test_domain_errors_map_to_statuses(error: Exception, status: int) -> None:
    translated = from_domain(error)  # type: ignore[arg-type]
    assert translated.status == status
    assert translated.message == str(error)


class _Route:
    def __init__(self, path: str) -> None:
        self.path = path


@pytest.mark.parametrize(
    ("path", "route", "expected"),
    [
        ("/api/v1/alerts/12", "/alerts/{alert_id}", "/api/v1/alerts/{alert_id}"),
        ("/api/v1/areas", "/areas", "/api/v1/areas"),
        ("/healthz", "/healthz", "/healthz"),
        ("/api/v1/areas/areas", "/areas/{code}", "/api/v1/areas/{code}"),
        ("/static/a/b.js", "/static/{path:path}", "/static/{path:path}"),
        ("/", "/", "/"),
    ],
)
def test_route_template_keeps_the_prefix(path: str, route: str, expected: str) -> None:
    assert route_template({"type": "http", "path": path, "route": _Route(route)}) == expected


def test_unmatched_requests_share_one_label() -> None:
    assert route_template({"type": "http", "path": "/x/1"}) == "unmatched"

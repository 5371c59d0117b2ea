"""Rates per area, district or city and per hour, day or month, read from ``rates_hourly``.

Values come from stream.queries (Σnumerator ÷ Σdenominator, never an average of percentages).
The range is bounded per grain so a query cannot return unbounded rows; results are paged.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import ConnDep, LimitQuery, SettingsDep, Viewer, page_limit
from api.errors import bad_request
from api.routers.common import CursorQuery, Page, check_range, int_cursor
from cityops import catalog
from stream.queries import Grain, Level, rates

router = APIRouter(tags=["rates"])

MAX_SPAN = {
    Grain.HOUR: timedelta(days=31),
    Grain.DAY: timedelta(days=366),
    Grain.MONTH: timedelta(days=3660),
}


class Rate(BaseModel):
    """One rate: period start, scope (area code, district or ``city``), sums and their ratio."""

    period: datetime
    scope: str
    metric: str
    numerator: float
    denominator: float
    samples: int
    value: float | None


@router.get("/rates", response_model=Page[Rate])
def get_rates(
    _: Viewer,
    conn: ConnDep,
    settings: SettingsDep,
    kind: catalog.Kind,
    start: datetime,
    end: datetime,
    metric: Annotated[
        str | None,
        Query(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="e.g. lighting_rate"),
    ] = None,
    grain: Grain = Grain.HOUR,
    level: Level = Level.AREA,
    area_code: Annotated[str | None, Query(max_length=64)] = None,
    district: Annotated[str | None, Query(max_length=100)] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 1000,
) -> Page[Rate]:
    """Rates of ``kind`` over [start, end); days and months are local (the configured zone)."""
    limit = page_limit(settings, limit)
    lo, hi = check_range(start, end)
    if hi - lo > MAX_SPAN[grain]:
        raise bad_request(
            f"end: a {grain.value} query may span at most {MAX_SPAN[grain].days} days; "
            "use a coarser grain or a shorter range",
            "end",
        )
    offset = int_cursor(cursor) or 0
    values = rates(
        conn,
        kind=kind.value,
        start=lo,
        end=hi,
        metric=metric,
        grain=grain,
        level=level,
        area=area_code,
        district=district,
        timezone=settings.timezone,
    )
    page = values[offset : offset + limit]
    items = [
        Rate(
            period=v.period,
            scope=v.scope,
            metric=v.metric,
            numerator=v.numerator,
            denominator=v.denominator,
            samples=v.samples,
            value=v.value,
        )
        for v in page
    ]
    more = offset + limit < len(values)
    return Page(items=items, next_cursor=str(offset + limit) if more else None)

"""Monthly reports and plan indicators over HTTP (`/api/v1/reports/...`, `/api/v1/indicators...`).

The work is done by the ``reports`` package (the CLI uses the same functions); this module only
checks input, picks the format and translates errors.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.deps import ERROR_RESPONSES, Admin, ConnDep, SettingsDep, Viewer
from api.errors import ApiError, from_domain
from api.routers.common import CODE_PATTERN
from cityops.errors import CityopsError
from reports import formats, monthly, observations
from reports.evaluation import Forecast, Status
from reports.render_html import RenderError

router = APIRouter(tags=["reports"], responses=ERROR_RESPONSES)

MonthQuery = Annotated[str, Query(pattern=r"^\d{4}-\d{2}$", description="Local month, YYYY-MM.")]


def _domain(err: CityopsError) -> ApiError:
    if isinstance(err, RenderError):
        return ApiError(503, "unavailable", str(err))
    return from_domain(err)


@router.get(
    "/reports/monthly",
    responses={200: {"content": {m: {} for m in formats.MEDIA_TYPES.values()}}},
)
def monthly_report(
    principal: Viewer,
    conn: ConnDep,
    settings: SettingsDep,
    month: MonthQuery,
    area: Annotated[str | None, Query(pattern=CODE_PATTERN, description="Area code.")] = None,
    district: Annotated[str | None, Query(max_length=100)] = None,
    fmt: Annotated[
        formats.Format, Query(alias="format", description="json, csv, xlsx, html or pdf.")
    ] = formats.Format.JSON,
    stale_rates: Annotated[
        Literal["recompute", "provisional"] | None,
        Query(
            description="Hourly rates missing or older than their readings: recompute them first "
            "(default, setting report.stale_rates) or mark the affected figures provisional."
        ),
    ] = None,
) -> Response:
    """The monthly operations report of the district (or one street/township) in one format.

    The response header ``X-Report-Provisional: true`` says some figures are provisional.
    """
    try:
        report = monthly.build(
            conn, settings, month, area=area, district=district, stale_rates=stale_rates
        )
        body = formats.render(report, fmt)
        monthly.record_run(conn, report, [fmt.value], f"api:{principal.name}")
        conn.commit()
    except CityopsError as err:
        raise _domain(err) from err
    name = formats.file_name(report, fmt)
    disposition = "inline" if fmt in (formats.Format.JSON, formats.Format.HTML) else "attachment"
    return Response(
        body,
        media_type=formats.MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": f'{disposition}; filename="{name}"',
            "X-Report-Provisional": "true" if report["provisional"] else "false",
        },
    )


class IndicatorOut(BaseModel):
    """One indicator of the catalog in effect."""

    key: str
    plan: str
    no: int
    name_zh: str
    name_en: str
    unit: str
    direction: str
    kind: str
    baseline: float | None
    target: float | None
    target_text: str
    attribute: str
    sensor_metric: str | None
    local: bool


class CatalogOut(BaseModel):
    """The catalog version and its indicators."""

    version: str
    indicators: list[IndicatorOut]


@router.get("/indicators", response_model=CatalogOut)
def list_indicators(
    _: Viewer,
    conn: ConnDep,
    plan: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9-]{0,31}$")] = None,
) -> CatalogOut:
    """The indicator catalog (shipped plus local), optionally one plan."""
    cat = observations.load_catalog(conn)
    return CatalogOut(
        version=cat.version,
        indicators=[
            IndicatorOut(
                key=i.key,
                plan=i.plan,
                no=i.no,
                name_zh=i.name_zh,
                name_en=i.name_en,
                unit=i.unit,
                direction=i.direction.value,
                kind=i.kind.value,
                baseline=i.baseline,
                target=i.resolved_target,
                target_text=i.target_text,
                attribute=i.attribute.value,
                sensor_metric=i.sensor_metric.value if i.sensor_metric else None,
                local=i.local,
            )
            for i in cat.by_plan(plan)
        ],
    )


@router.get("/indicators/evaluation")
def evaluation(
    _: Viewer,
    conn: ConnDep,
    settings: SettingsDep,
    as_of: Annotated[date, Query(description="Evaluation date, YYYY-MM-DD.")],
    plan: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9-]{0,31}$")] = None,
) -> dict[str, Any]:
    """Every indicator classified at ``as_of`` from stored observations and forecasts."""
    try:
        return monthly.evaluate_stored(conn, as_of, plan, monthly.rules_from(settings))
    except CityopsError as err:
        raise _domain(err) from err


class ObservationIn(BaseModel):
    """A dated value (and/or an authority's status) of an indicator."""

    indicator: str = Field(max_length=64)
    observed_on: date
    value: float | None = Field(default=None, allow_inf_nan=False)
    status: Status | None = None
    source: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=2000)
    scope: str = Field(default="district", pattern=CODE_PATTERN)


class Stored(BaseModel):
    """The id of what was stored."""

    id: int


@router.post("/indicators/observations", response_model=Stored, status_code=201)
def add_observation(principal: Admin, conn: ConnDep, body: ObservationIn) -> Stored:
    """Store an observation (a second one for the same day, scope and source replaces it)."""
    try:
        cat = observations.load_catalog(conn)
        obs = observations.make_observation(
            cat,
            indicator=body.indicator,
            observed_on=body.observed_on,
            value=body.value,
            status=body.status,
            source=body.source,
            note=body.note,
            scope=body.scope,
        )
        obs_id = observations.save_observation(conn, obs, f"api:{principal.name}")
        conn.commit()
    except CityopsError as err:
        raise _domain(err) from err
    return Stored(id=obs_id)


@router.get("/indicators/observations")
def list_observations(
    _: Viewer,
    conn: ConnDep,
    indicator: Annotated[str | None, Query(max_length=64)] = None,
    until: date | None = None,
) -> list[dict[str, Any]]:
    """Stored observations, by indicator and date."""
    return [
        {
            "indicator": o.indicator,
            "observed_on": o.on.isoformat(),
            "value": o.value,
            "status": o.status.value if o.status else None,
            "source": o.source,
            "note": o.note,
            "scope": o.scope,
        }
        for o in observations.list_observations(conn, indicator=indicator, until=until)
    ]


class ForecastIn(BaseModel):
    """A forecast of the end-of-plan value with its reason."""

    indicator: str = Field(max_length=64)
    made_on: date
    value: float = Field(allow_inf_nan=False)
    reason: str = Field(min_length=1, max_length=2000)
    proposed_target: float | None = Field(default=None, allow_inf_nan=False)


@router.post("/indicators/forecasts", response_model=Stored, status_code=201)
def add_forecast(principal: Admin, conn: ConnDep, body: ForecastIn) -> Stored:
    """Store a forecast (one per indicator and day)."""
    try:
        cat = observations.load_catalog(conn)
        fid = observations.save_forecast(
            conn,
            cat,
            Forecast(
                indicator=body.indicator,
                made_on=body.made_on,
                value=body.value,
                reason=body.reason,
                proposed_target=body.proposed_target,
            ),
            f"api:{principal.name}",
        )
        conn.commit()
    except CityopsError as err:
        raise _domain(err) from err
    return Stored(id=fid)

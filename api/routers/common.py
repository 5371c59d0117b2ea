"""Small pieces the routers share: page envelopes, time-range checks, cursors."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from api.errors import ApiError, bad_request

T = TypeVar("T")

MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)
BIGINT_MAX = 2**63 - 1

CursorQuery = Annotated[
    str | None,
    Query(max_length=200, description="Opaque cursor: the next_cursor of the previous page."),
]
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class Page(BaseModel, Generic[T]):
    """One page of a list; ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None


class ImportRowError(BaseModel):
    """One rejected row of a bulk import."""

    location: str
    message: str


class ImportResult(BaseModel):
    """Outcome of a bulk import: rows read, rows stored and every rejected row."""

    total: int
    stored: int
    errors: list[ImportRowError]


def check_time(value: datetime, name: str) -> datetime:
    """A timezone-aware instant in the supported range, in UTC; 422 otherwise."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise bad_request(
            f"{name}: needs a time zone offset (e.g. 2026-01-31T18:00:00+08:00)", name
        )
    # Check before converting: astimezone() overflows near year 1 and 9999.
    if not 1970 <= value.year < 2200:
        raise bad_request(f"{name}: must be between 1970 and 2200", name)
    return value.astimezone(UTC)


def check_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """A checked [start, end) with end after start."""
    lo, hi = check_time(start, "start"), check_time(end, "end")
    if hi <= lo:
        raise bad_request("end: must be after start", "end")
    return lo, hi


def int_cursor(cursor: str | None) -> int | None:
    """The id in an integer keyset cursor."""
    if cursor is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", cursor):
        raise ApiError(
            422, "invalid", "cursor: not a cursor this endpoint returned", {"field": "cursor"}
        )
    return int(cursor)


def split_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """A (time, key) keyset cursor written by :func:`make_cursor`."""
    if cursor is None:
        return None
    stamp, sep, key = cursor.partition("|")
    try:
        if not sep:
            raise ValueError(cursor)
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None:
            raise ValueError(cursor)
        return check_time(when, "cursor"), key
    except (ValueError, ApiError):
        raise ApiError(
            422, "invalid", "cursor: not a cursor this endpoint returned", {"field": "cursor"}
        ) from None


def make_cursor(when: datetime, key: str) -> str:
    """A (time, key) keyset cursor."""
    return f"{when.astimezone(UTC).isoformat()}|{key}"

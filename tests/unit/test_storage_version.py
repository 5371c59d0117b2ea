"""The TimescaleDB version gate: before 2.18.1 ON CONFLICT into compressed chunks lost rows."""

from __future__ import annotations

import pytest

from cityops.db.storage import MIN_TIMESCALEDB, check_timescaledb_version, parse_version
from cityops.errors import DatabaseError


def test_versions_parse_and_compare() -> None:
    assert parse_version("2.17.2") == (2, 17, 2)
    assert parse_version("2.18.0-dev") == (2, 18, 0)
    assert parse_version("2.26") == (2, 26, 0)
    assert parse_version("2.9.10") < parse_version("2.18.1") < parse_version("2.28.3")
    assert MIN_TIMESCALEDB == (2, 18, 1)
    with pytest.raises(DatabaseError):
        parse_version("unknown")


@pytest.mark.parametrize("version", ["2.18.1", "2.18.2", "2.26.0", "3.0.0"])
def test_fixed_versions_pass(version: str) -> None:
    check_timescaledb_version(version)


@pytest.mark.parametrize("version", ["2.17.2", "2.18.0", "2.9.3", "1.7.5"])
def test_affected_versions_are_refused_with_the_reason_and_the_way_out(version: str) -> None:
    with pytest.raises(DatabaseError) as info:
        check_timescaledb_version(version)
    text = str(info.value)
    assert version in text
    assert "2.18.1" in text
    assert "ON CONFLICT DO NOTHING" in text
    assert "7672" in text
    assert "CITYOPS_STORAGE_TIMESCALEDB=off" in text

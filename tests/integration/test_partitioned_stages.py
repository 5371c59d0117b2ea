"""Partitioned workers: the stream core and the alert engine keep only their partition's areas.

Ingest in worker i of N writes only the readings of areas with crc32(area) % N == i
(tests/integration/ingest/test_scale_out.py); the stream core and the alert engine of the same
worker must load, evaluate and restore exactly those areas, or they would write empty rates and
fire no-data alerts for the other worker's devices.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from alerts.engine import AlertEngine
from alerts.model import AlertNotice, NoticeState
from alerts.rules import RuleHolder
from cityops import registry
from cityops.catalog import Kind
from cityops.partition import Partition, area_filter, partition_of
from cityops.schedule import HeatingCalendar, LightingSchedule
from cityops.settings import IngestSettings, ScheduleSettings
from stream.live import LiveRates
from tests.conftest import make_settings
from tests.integration.alerts.conftest import DEVICES, NIGHT, Clock

pytestmark = pytest.mark.pg

# The registry of tests/integration/alerts: CY-JW falls in partition 1 of 2, CY-CW, CY-SJ and
# CY-WJ in partition 0 (asserted below, so a change of hash cannot make the test vacuous).
OWNER = {"CY-JW": 1, "CY-CW": 0, "CY-SJ": 0, "CY-WJ": 0}


@pytest.fixture
def dsn(migrated_db: str) -> str:
    with psycopg.connect(migrated_db) as conn:
        report = registry.import_devices(
            conn, list(registry.parse_records(DEVICES, "csv")), "partition-test"
        )
        assert report.errors == []
    assert {a: partition_of(a, 2) for a in OWNER} == OWNER
    return migrated_db


@pytest.fixture
def pool(dsn: str) -> Iterator[ConnectionPool]:
    p = ConnectionPool(
        dsn, min_size=1, max_size=4, open=True, kwargs={"options": "-c TimeZone=UTC"}
    )
    try:
        yield p
    finally:
        p.close()


def _engine(pool: ConnectionPool, index: int, sent: list[AlertNotice]) -> AlertEngine:
    schedule = ScheduleSettings()
    return AlertEngine(
        rules=RuleHolder(),
        pool=pool,
        schedule=LightingSchedule(schedule),
        calendar=HeatingCalendar(schedule),
        notify=sent.extend,
        clock=Clock(),
        owns_area=Partition(index, 2).owns,
    )


def test_area_filter_follows_the_ingest_settings() -> None:
    assert area_filter(IngestSettings()) is None
    owns = area_filter(IngestSettings(partitions=2, partition=1))
    assert owns is not None
    assert [a for a in OWNER if owns(a)] == ["CY-JW"]


def test_live_rates_keep_only_their_partitions_areas_and_devices(dsn: str) -> None:
    seen: dict[Kind, set[str]] = {kind: set() for kind in Kind}
    for index in range(2):
        base = make_settings(dsn)
        settings = base.model_copy(update={"ingest": IngestSettings(partitions=2, partition=index)})
        with psycopg.connect(dsn, autocommit=True) as conn:
            live = LiveRates.from_db(settings, conn)
        assert live.areas.codes
        assert all(partition_of(a, 2) == index for a in live.areas.codes)
        for kind, index_ in live.devices.items():
            ids = set(index_.ids.tolist())
            assert not ids & seen[kind]  # no device in two workers
            seen[kind] |= ids
    # together the two workers keep every registered device
    with psycopg.connect(dsn) as conn:
        for kind in Kind:
            registered = {
                r[0]
                for r in conn.execute(
                    "SELECT device_id FROM devices WHERE kind = %s", (kind.value,)
                )
            }
            assert seen[kind] == registered


def test_alert_engines_split_devices_area_rules_and_open_alerts(
    dsn: str, pool: ConnectionPool
) -> None:
    sent: list[list[AlertNotice]] = [[], []]
    engines = [_engine(pool, i, sent[i]) for i in range(2)]
    assert set(engines[1].directory.devices) == {"SL-1", "SL-2", "SL-3", "SL-4", "SL-5", "MH-1"}
    assert not set(engines[0].directory.devices) & set(engines[1].directory.devices)

    # Both areas had a poor last hour: each engine raises the alert of its own area only.
    last_hour = NIGHT.replace(minute=0) - timedelta(hours=1)
    with psycopg.connect(dsn) as conn:
        for area in ("CY-JW", "CY-CW"):
            conn.execute(
                "INSERT INTO rates_hourly VALUES (%s, 'streetlight', 'lighting_rate', "
                "%s, 900, 1000, 10)",
                (area, last_hour),
            )
    fired: list[set[tuple[str, str | None]]] = []
    for engine in engines:
        notices = engine.tick(NIGHT + timedelta(minutes=1))
        fired.append(
            {
                (n.rule, n.labels.get("area_code"))
                for n in notices
                if n.state is NoticeState.FIRING and n.rule == "area_lighting_rate_low"
            }
        )
    assert fired == [{("area_lighting_rate_low", "CY-CW")}, {("area_lighting_rate_low", "CY-JW")}]

    # Long silence: no-data alerts only for each engine's own devices.
    late = NIGHT + timedelta(days=2)
    for i, engine in enumerate(engines):
        for n in engine.tick(late):
            if n.state is NoticeState.FIRING and n.labels.get("device_id"):
                assert partition_of(n.labels["area_code"], 2) == i, n

    # A restarted worker restores only its own open alerts and leaves the others' alone.
    with psycopg.connect(dsn) as conn:
        stored = {
            r[0]
            for r in conn.execute(
                "SELECT labels->>'area_code' FROM alerts WHERE state <> 'resolved'"
            )
        }
    assert {"CY-JW", "CY-CW"} <= stored
    for i in range(2):
        restarted = _engine(pool, i, [])
        areas = {a.labels.get("area_code") for a in restarted.lifecycle.open.values()}
        assert areas
        assert all(partition_of(str(a), 2) == i for a in areas)

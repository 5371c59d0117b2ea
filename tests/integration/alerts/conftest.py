"""An alert engine on a fresh database with a small registry and a controlled clock."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from alerts.engine import AlertEngine
from alerts.model import AlertNotice
from alerts.rules import RuleHolder
from cityops import catalog, registry
from cityops.batch import CommittedBatch, KindBatch, StatusChange
from cityops.catalog import Kind
from cityops.schedule import HeatingCalendar, LightingSchedule
from cityops.settings import ScheduleSettings

# 2026-12-01 14:00 UTC is 22:00 in Beijing: lamps are due on, and it is the heating season.
NIGHT = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)

DEVICES = """\
device_id,kind,area_code,lat,lon,gateway_id,schedule_class,cabinet_id,owner_unit,compound,heat_company,site_id,public
SL-1,streetlight,CY-JW,39.9060,116.4520,CAB-1,mains,CAB-1,,,,,
SL-2,streetlight,CY-JW,39.9061,116.4521,CAB-1,mains,CAB-1,,,,,
SL-3,streetlight,CY-JW,39.9062,116.4522,CAB-1,mains,CAB-1,,,,,
SL-4,streetlight,CY-JW,39.9063,116.4523,CAB-1,mains,CAB-1,,,,,
SL-5,streetlight,CY-JW,39.9064,116.4524,CAB-1,mains,CAB-1,,,,,
SL-9,streetlight,CY-CW,39.9220,116.4370,CAB-2,solar,CAB-2,,,,,
MH-1,manhole,CY-JW,39.9070,116.4530,,,,telecom,,,,
MH-2,manhole,CY-CW,39.9200,116.4300,,,,gas,,,,
HT-1,heating,CY-SJ,39.8930,116.4600,,,,,劲松小区,热力集团,,
HT-2,heating,CY-SJ,39.8931,116.4601,,,,,劲松小区,热力集团,,
CH-1,charger,CY-WJ,40.0000,116.4750,,,,,,,SITE-1,true
CH-2,charger,CY-WJ,40.0001,116.4751,,,,,,,SITE-1,true
"""


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = NIGHT

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Harness:
    """The engine, its clock, the notices it sent and a way to feed readings."""

    engine: AlertEngine
    clock: Clock
    dsn: str
    sent: list[AlertNotice] = field(default_factory=list)
    seq: int = 0

    def readings(
        self,
        kind: Kind,
        rows: Sequence[tuple[str, datetime, Mapping[str, Any]]],
        *,
        complaints: Sequence[Mapping[str, Any]] = (),
    ) -> list[AlertNotice]:
        """Feed validated readings (device, ts, values) as one committed batch."""
        spec = catalog.KINDS[kind]
        built = [
            (d, int(ts.timestamp() * 1000), int(ts.timestamp() * 1000), spec.validate_values(v))
            for d, ts, v in rows
        ]
        self.seq += 1
        batch = CommittedBatch(
            seq=self.seq,
            committed_at=self.clock.now,
            readings={kind: KindBatch.from_rows(kind, built)} if built else {},
            complaints=complaints,
        )
        return self.engine.process_batch(batch)

    def status(self, device_id: str, kind: Kind, online: bool, at: datetime) -> list[AlertNotice]:
        """Feed a birth/last-will status change."""
        self.seq += 1
        batch = CommittedBatch(
            seq=self.seq,
            committed_at=at,
            status_changes=[StatusChange(device_id=device_id, kind=kind, online=online, ts=at)],
        )
        return self.engine.process_batch(batch)

    def complaints(self, *records: Mapping[str, Any]) -> list[AlertNotice]:
        """Feed hotline complaints (they must already be in the complaints table)."""
        self.seq += 1
        return self.engine.process_batch(
            CommittedBatch(seq=self.seq, committed_at=self.clock.now, complaints=records)
        )

    def tick(self, at: datetime) -> list[AlertNotice]:
        """Move the clock to ``at`` and run the periodic evaluation."""
        self.clock.now = at
        return self.engine.tick(at)

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """Run a query against the test database."""
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql.encode(), params).fetchall()


def make_engine(
    dsn: str, pool: ConnectionPool, clock: Clock, sent: list[AlertNotice]
) -> AlertEngine:
    """An engine with the shipped rules on ``dsn``."""
    settings = ScheduleSettings()
    return AlertEngine(
        rules=RuleHolder(),
        pool=pool,
        schedule=LightingSchedule(settings),
        calendar=HeatingCalendar(settings),
        notify=sent.extend,
        clock=clock,
        flap_window=timedelta(minutes=30),
    )


@pytest.fixture
def harness(migrated_db: str) -> Iterator[Harness]:
    """A fresh database with the small registry above and an engine on it."""
    with psycopg.connect(migrated_db) as conn:
        report = registry.import_devices(
            conn, list(registry.parse_records(DEVICES, "csv")), "alerts-test"
        )
        assert report.errors == []
    pool = ConnectionPool(
        migrated_db, min_size=1, max_size=4, open=True, kwargs={"options": "-c TimeZone=UTC"}
    )
    clock = Clock()
    sent: list[AlertNotice] = []
    try:
        yield Harness(
            engine=make_engine(migrated_db, pool, clock, sent),
            clock=clock,
            dsn=migrated_db,
            sent=sent,
        )
    finally:
        pool.close()


def minutes(n: float) -> timedelta:
    """Shorthand."""
    return timedelta(minutes=n)

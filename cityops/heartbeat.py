"""Progress of ingest's in-process consumers, stored for processes that cannot see their memory.

The stream core and the alert engine run inside ``cityops ingest``; each writes one row of
``consumer_heartbeat`` (migration 0014) after every successful flush or commit. The API's
``/readyz`` reads the rows (a consumer whose row stopped moving is stale), and a restarted stream
core reads its own row to know from which hour to restore the hours in progress.

``Backoff`` is the retry schedule the consumers share with ingest's writer: wait
``ingest.retry_initial_s`` after the first failure, doubling up to ``ingest.retry_max_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from cityops.settings import IngestSettings

UPSERT_SQL = """
INSERT INTO consumer_heartbeat (consumer, beat_at, lag_s, resume_from, stopped_at)
VALUES (%(consumer)s, now(), %(lag_s)s, %(resume_from)s, %(stopped_at)s)
ON CONFLICT (consumer) DO UPDATE
SET beat_at = EXCLUDED.beat_at, lag_s = EXCLUDED.lag_s,
    resume_from = COALESCE(EXCLUDED.resume_from, consumer_heartbeat.resume_from),
    stopped_at = EXCLUDED.stopped_at
"""

READ_SQL = """
SELECT consumer, beat_at, lag_s, resume_from, stopped_at,
       extract(epoch FROM now() - beat_at)::double precision
FROM consumer_heartbeat ORDER BY consumer
"""


def consumer_name(stage: str, ingest: IngestSettings) -> str:
    """The row of ``stage`` ("stream" or "alerts") of this ingest worker, e.g. ``stream/0of1``."""
    return f"{stage}/{ingest.partition}of{ingest.partitions}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Beat:
    """One consumer's last stored progress."""

    consumer: str
    beat_at: datetime
    lag_s: float
    resume_from: datetime | None
    stopped_at: datetime | None
    age_s: float  # seconds since beat_at, on the database's clock

    def stale(self, max_lag_s: float) -> bool:
        """Running, and its row is older (or its stored lag larger) than ``max_lag_s``."""
        return self.stopped_at is None and (self.age_s > max_lag_s or self.lag_s > max_lag_s)


def write(
    conn: psycopg.Connection[Any],
    consumer: str,
    *,
    lag_s: float = 0.0,
    resume_from: datetime | None = None,
    stopped: bool = False,
) -> None:
    """Record progress (``resume_from`` None keeps the stored one); autocommit or caller's txn."""
    conn.execute(
        UPSERT_SQL,
        {
            "consumer": consumer,
            "lag_s": float(lag_s),
            "resume_from": resume_from,
            "stopped_at": datetime.now().astimezone() if stopped else None,
        },
    )


def read(conn: psycopg.Connection[Any]) -> list[Beat]:
    """Every consumer's row; empty when the table does not exist yet (not migrated)."""
    if conn.execute("SELECT to_regclass('consumer_heartbeat')").fetchone() == (None,):
        return []
    return [
        Beat(
            consumer=r[0],
            beat_at=r[1],
            lag_s=float(r[2]),
            resume_from=r[3],
            stopped_at=r[4],
            age_s=float(r[5]),
        )
        for r in conn.execute(READ_SQL).fetchall()
    ]


def resume_from(conn: psycopg.Connection[Any], consumer: str) -> datetime | None:
    """The stored ``resume_from`` of ``consumer`` (None: no row, or the table is missing)."""
    for beat in read(conn):
        if beat.consumer == consumer:
            return beat.resume_from
    return None


class Backoff:
    """When the next database attempt is due after failures (doubling, capped)."""

    def __init__(
        self, initial_s: float, max_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.clock = clock
        self.delay_s = 0.0
        self.retry_at = 0.0
        self.failures = 0

    def due(self) -> bool:
        """An attempt may be made now."""
        return self.clock() >= self.retry_at

    def failed(self) -> float:
        """Record a failure; returns the wait before the next attempt."""
        self.failures += 1
        self.delay_s = self.initial_s if self.delay_s == 0 else min(self.delay_s * 2, self.max_s)
        self.retry_at = self.clock() + self.delay_s
        return self.delay_s

    def succeeded(self) -> None:
        """Record a success: the next failure waits ``initial_s`` again."""
        self.delay_s = 0.0
        self.retry_at = 0.0

"""Recomputes from the database never count a batch twice (issue 16).

Ingest commits a batch and then hands it to the consumers, so a recompute whose database read
falls between the two would see the batch stored and then get it folded once more. The batches
are driven by hand here, in the order ingest's writer thread produces them, including the batch
committed but not yet handed on while the stream core recomputes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import pytest

from cityops.batch import CommittedBatch, KindBatch
from cityops.catalog import Kind
from cityops.settings import DatabaseSettings, Settings
from stream.live import LiveRates
from stream.recompute import recompute
from stream.registry import load_areas, load_devices
from tests.integration.stream import fleet

pytestmark = pytest.mark.pg


def _batches(rows: dict[Kind, list[fleet.Row]], size: int) -> list[dict[Kind, list[fleet.Row]]]:
    merged = sorted(
        [(r[1], k, r) for k, rs in rows.items() for r in rs], key=lambda x: (x[0], x[1].value)
    )
    out = []
    for lo in range(0, len(merged), size):
        by_kind: dict[Kind, list[fleet.Row]] = {}
        for _, kind, row in merged[lo : lo + size]:
            by_kind.setdefault(kind, []).append(row)
        out.append(by_kind)
    return out


def test_recomputes_count_each_batch_once(migrated_db: str, pg_admin_dsn: str) -> None:
    settings = Settings(db=DatabaseSettings(dsn=migrated_db))

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(migrated_db, autocommit=True, options="-c TimeZone=UTC")

    rows = fleet.random_rows(seed=13)
    lamps = rows[Kind.STREETLIGHT]
    night = int(datetime(2026, 1, 31, 14, tzinfo=UTC).timestamp() * 1000)
    held_back = [r for r in lamps if r[0] == "SL-1-1" and night <= r[1] < night + 5_400_000]
    assert held_back
    rest = {k: [r for r in v if r not in held_back] for k, v in rows.items()}
    batches = _batches(rest, 40)
    with connect() as store_conn, psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        fleet.register(store_conn)
        areas = load_areas(store_conn)
        devices = {k: load_devices(store_conn, k, areas) for k in Kind}
        live = LiveRates(settings, areas, devices, conn=connect(), connect=connect)
        point = live.catch_up_point()  # as in ingest: recomputes wait for a batch
        live.backoff.initial_s = 0.0  # reconnect at once in the test
        seq = 0

        def commit(by_kind: dict[Kind, list[fleet.Row]]) -> CommittedBatch:
            nonlocal seq
            for kind, krows in by_kind.items():
                fleet.store(store_conn, kind, krows)
            seq += 1
            return CommittedBatch(
                seq=seq,
                committed_at=datetime.now(UTC),
                readings={k: KindBatch.from_rows(k, v) for k, v in by_kind.items()},
            )

        def hand_on(batch: CommittedBatch) -> None:
            live.on_batch(batch)
            point.on_batch(batch)

        n = len(batches)
        for i, by_kind in enumerate(batches[: n // 2]):
            hand_on(commit(by_kind))
            if i % 7 == 0:
                live.flush()
        live.flush()

        # 1. late readings re-open hours; the snapshot is taken at the next catch-up point and
        # the batch folded after it is added to the recomputed sums
        hand_on(commit({Kind.STREETLIGHT: held_back}))
        assert live.late_readings()[Kind.STREETLIGHT] == len(held_back)
        assert live._work is not None  # taken right after the late batch itself
        hand_on(commit(batches[n // 2]))  # folded after the snapshot
        live.flush()
        assert live.recomputed_hours > 0

        # 2. the stream core's connection dies with hours unwritten; ingest is idle, so the
        # flush thread takes the snapshot itself — while a batch is committed but not yet
        # handed on (it is in the snapshot and then folded: counted twice until the next
        # catch-up point recomputes those hours again)
        for by_kind in batches[n // 2 + 1 : n // 2 + 4]:
            hand_on(commit(by_kind))
        assert live.pending()
        assert live.conn is not None
        admin.execute("SELECT pg_terminate_backend(%s)", (live.conn.info.backend_pid,))
        live.flush()
        assert live.db_ok is False
        in_flight = commit(batches[n // 2 + 4])
        recomputed = live.recomputed_hours
        live.flush()  # reconnects; nothing arrived since the last flush: recomputes now
        assert live.db_ok is True
        assert live.recomputed_hours > recomputed
        hand_on(in_flight)
        live.flush()  # a batch arrived after the idle snapshot: its hours go round again
        assert live.pending()
        for by_kind in batches[n // 2 + 5 :]:
            hand_on(commit(by_kind))
        live.stop()
        assert live.consumer_errors == 0
        assert not live.pending()
        live_table = fleet.rates_table(store_conn)
        live.close()
        store_conn.execute("DELETE FROM rates_hourly")
        recompute(store_conn, settings, fleet.START, fleet.END)
        batch_table = fleet.rates_table(store_conn)
    in_range = {k: v for k, v in live_table.items() if fleet.START <= k[3] < fleet.END}
    assert len(in_range) > 500
    assert in_range == batch_table
    assert np.isfinite([v[0] for v in in_range.values()]).all()

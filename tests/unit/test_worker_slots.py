"""TimescaleDB's background jobs need worker slots: the check `db migrate` warns with."""

from __future__ import annotations

from cityops.db.storage import WorkerSlots


def test_postgres_defaults_are_short_for_timescaledb_jobs() -> None:
    # PostgreSQL's defaults with TimescaleDB's: 8 workers for up to 16 jobs plus 8 parallel
    slots = WorkerSlots(max_worker_processes=8, max_parallel_workers=8, max_background_workers=16)
    assert slots.wanted == 24
    assert slots.short
    fields = slots.as_log()
    assert fields["max_worker_processes"] == 8
    assert fields["wanted"] == 24
    assert "timescaledb-tune" in str(fields["hint"])


def test_tuned_server_is_not_short() -> None:
    slots = WorkerSlots(max_worker_processes=27, max_parallel_workers=8, max_background_workers=16)
    assert not slots.short

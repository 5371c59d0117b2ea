"""Inspecting and replaying dead letters.

Replay runs a stored payload through the same decode/validate/write path as live ingest (so it
stores each reading once, whatever was stored before) and records the outcome on the dead
letter: ``stored: ...`` or ``rejected again: <reason>: <detail>``. A replay that is rejected
again does not create a new dead letter; the original keeps the latest outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row

from ingest.batcher import PendingBatch
from ingest.decode import EPOCH, Decoder
from ingest.writer import prepare_connection, write_batch


@dataclass(frozen=True, kw_only=True, slots=True)
class DeadLetterRow:
    """A row of ``dead_letters``."""

    id: int
    received_at: datetime
    topic: str
    payload: bytes
    reason: str
    detail: str | None
    replayed_at: datetime | None
    replay_result: str | None


_COLUMNS = "id, received_at, topic, payload, reason, detail, replayed_at, replay_result"
SHOW_SQL = f"SELECT {_COLUMNS} FROM dead_letters WHERE id = %s"
MARK_SQL = "UPDATE dead_letters SET replayed_at = now(), replay_result = %s WHERE id = %s"


def list_dead_letters(
    conn: psycopg.Connection[Any],
    *,
    reason: str | None = None,
    since: datetime | None = None,
    pending_only: bool = False,
    limit: int = 50,
) -> list[DeadLetterRow]:
    """Newest dead letters first, optionally filtered."""
    where = []
    params: list[Any] = []
    if reason is not None:
        where.append("reason = %s")
        params.append(reason)
    if since is not None:
        where.append("received_at >= %s")
        params.append(since)
    if pending_only:
        where.append("(replay_result IS NULL OR replay_result NOT LIKE 'stored%%')")
    query = f"SELECT {_COLUMNS} FROM dead_letters"
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY id DESC LIMIT %s"
    params.append(limit)
    with conn.cursor(row_factory=class_row(DeadLetterRow)) as cur:
        return cur.execute(query, params).fetchall()


def get_dead_letter(conn: psycopg.Connection[Any], dead_letter_id: int) -> DeadLetterRow | None:
    """One dead letter by id."""
    with conn.cursor(row_factory=class_row(DeadLetterRow)) as cur:
        return cur.execute(SHOW_SQL, (dead_letter_id,)).fetchone()


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplayOutcome:
    """What replaying one dead letter did."""

    id: int
    stored: bool
    result: str


def replay(
    conn: psycopg.Connection[Any], decoder: Decoder, ids: Sequence[int]
) -> list[ReplayOutcome]:
    """Re-ingest the given dead letters, each in its own transaction, and record the outcome."""
    prepare_connection(conn)
    outcomes: list[ReplayOutcome] = []
    for dead_letter_id in ids:
        row = get_dead_letter(conn, dead_letter_id)
        conn.commit()
        if row is None:
            outcomes.append(ReplayOutcome(id=dead_letter_id, stored=False, result="not found"))
            continue
        received_ms = (row.received_at - EPOCH) // timedelta(milliseconds=1)
        batch = PendingBatch()
        decoder.decode(row.topic, bytes(row.payload), received_ms, batch)
        rejected = batch.dead_letters
        batch.dead_letters = []
        result = write_batch(conn, batch)
        stored = sum(result.stored.values())
        parts = [f"{stored} new reading(s)"]
        dupes = sum(result.duplicates.values())
        if dupes:
            parts.append(f"{dupes} already stored")
        if batch.complaints:
            parts.append(f"{len(result.complaints_stored)} new complaint(s)")
        if batch.statuses:
            parts.append(f"{len(result.statuses_stored)} status report(s)")
        if batch.registrations:
            parts.append(f"{len(batch.registrations)} device(s) registered")
        if rejected:
            first = rejected[0]
            text = f"rejected again: {first.reason}: {first.detail}"
            if len(rejected) > 1:
                text += f" (+{len(rejected) - 1} more)"
            if batch.readings or batch.complaints or batch.statuses:
                text += "; partly stored: " + ", ".join(parts)
            ok = False
        else:
            text = "stored: " + ", ".join(parts)
            ok = True
        conn.execute(MARK_SQL, (text, dead_letter_id))
        conn.commit()
        outcomes.append(ReplayOutcome(id=dead_letter_id, stored=ok, result=text))
    return outcomes

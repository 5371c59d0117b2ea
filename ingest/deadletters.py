"""Inspecting and replaying dead letters.

Replay runs a stored payload through the same decode/validate/write path as live ingest (so it
stores each reading once, whatever was stored before) and records the outcome on the dead
letter: ``stored: ...`` or ``rejected again: <reason>: <detail>`` (a database refusal or a
decoding bug included: the outcome is recorded whatever happens, short of the database being
unreachable). A replay that is rejected again does not create a new dead letter; the original
keeps the latest outcome.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row

from ingest.batcher import PendingBatch, storable_text
from ingest.decode import EPOCH, Decoder, Reason
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
        try:
            text, ok = _replay_one(conn, decoder, row.topic, bytes(row.payload), received_ms)
        except psycopg.OperationalError:
            raise  # the database is gone: nothing can be recorded
        except psycopg.Error as err:  # refused by the database: recorded, never a crash
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            text, ok = f"rejected again: {Reason.DATABASE_REJECTED}: {_one_line(err)}", False
        except Exception as err:  # a bug in decoding must not leave the outcome unrecorded
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            text, ok = f"rejected again: {Reason.DECODE_ERROR}: {type(err).__name__}: {err}", False
        text = storable_text(text)
        conn.execute(MARK_SQL, (text, dead_letter_id))
        conn.commit()
        outcomes.append(ReplayOutcome(id=dead_letter_id, stored=ok, result=text))
    return outcomes


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _replay_one(
    conn: psycopg.Connection[Any], decoder: Decoder, topic: str, payload: bytes, received_ms: int
) -> tuple[str, bool]:
    """Decode and write one stored message; the outcome text and whether it was all stored."""
    batch = PendingBatch()
    decoder.decode(topic, payload, received_ms, batch)
    rejected = batch.dead_letters
    batch.dead_letters = []
    result = write_batch(conn, batch, store_conflicts=False)
    rejected = [*rejected, *result.conflicts]
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
    if not rejected:
        return "stored: " + ", ".join(parts), True
    first = rejected[0]
    text = f"rejected again: {first.reason}: {first.detail}"
    if len(rejected) > 1:
        text += f" (+{len(rejected) - 1} more)"
    if batch.readings or len(batch.complaints) > len(result.conflicts) or batch.statuses:
        text += "; partly stored: " + ", ".join(parts)
    return text, False

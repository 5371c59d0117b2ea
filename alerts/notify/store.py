"""The ``notifications`` table: one row per notification and receiver, updated per attempt."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import orjson
import psycopg
import structlog
from psycopg_pool import ConnectionPool

from alerts.notify import payloads
from alerts.notify.model import Notification

log = structlog.get_logger(__name__)

UPSERT_SQL = """
INSERT INTO notifications (
    notification_id, route, group_key, receiver, receiver_type, purpose, level,
    alert_ids, fingerprints, alert_count, status, attempts, next_attempt_at, last_error,
    payload, created_at, last_attempt_at, sent_at
) VALUES (
    %(notification_id)s, %(route)s, %(group_key)s, %(receiver)s, %(receiver_type)s,
    %(purpose)s, %(level)s, %(alert_ids)s, %(fingerprints)s, %(alert_count)s, %(status)s,
    %(attempts)s, %(next_attempt_at)s, %(last_error)s, %(payload)s::jsonb, %(created_at)s,
    %(last_attempt_at)s, %(sent_at)s
)
ON CONFLICT (notification_id, receiver) DO UPDATE SET
    status = EXCLUDED.status,
    attempts = EXCLUDED.attempts,
    next_attempt_at = EXCLUDED.next_attempt_at,
    last_error = EXCLUDED.last_error,
    last_attempt_at = EXCLUDED.last_attempt_at,
    sent_at = EXCLUDED.sent_at
"""


class NotificationStore:
    """Records delivery attempts; a database problem is logged and never stops a delivery.

    After a failure, records are skipped for ``pause_s`` so that a database outage costs each
    delivery nothing rather than a connection timeout per attempt.
    """

    def __init__(
        self, pool: ConnectionPool, *, timeout_s: float = 2.0, pause_s: float = 30.0
    ) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self.pause_s = pause_s
        self.skipped = 0
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def record(
        self,
        n: Notification,
        *,
        receiver: str,
        receiver_type: str,
        status: str,
        attempts: int,
        at: datetime,
        next_attempt_at: datetime | None = None,
        last_error: str | None = None,
    ) -> None:
        """Insert or update the row of ``n`` for ``receiver``."""
        with self._lock:
            if time.monotonic() < self._paused_until:
                self.skipped += 1
                return
        params: dict[str, Any] = {
            "notification_id": n.id,
            "route": n.route,
            "group_key": n.group_key,
            "receiver": receiver,
            "receiver_type": receiver_type,
            "purpose": n.purpose.value,
            "level": n.level,
            "alert_ids": [a.alert_id for a in n.alerts],
            "fingerprints": [a.fingerprint for a in n.alerts],
            "alert_count": len(n.alerts),
            "status": status,
            "attempts": attempts,
            "next_attempt_at": next_attempt_at,
            "last_error": last_error,
            "payload": orjson.dumps(payloads.cityops_payload(n, receiver)).decode(),
            "created_at": n.created_at,
            "last_attempt_at": at if attempts else None,
            "sent_at": at if status == "sent" else None,
        }
        try:
            with self.pool.connection(timeout=self.timeout_s) as conn:
                conn.execute(UPSERT_SQL, params)
        except psycopg.Error as err:
            with self._lock:
                self._paused_until = time.monotonic() + self.pause_s
                self.skipped += 1
            log.warning(
                "notification_record_failed",
                notification_id=str(n.id),
                receiver=receiver,
                error=str(err).strip(),
                paused_s=self.pause_s,
            )

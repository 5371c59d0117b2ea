"""One worker thread and bounded queue per receiver: a slow or failing receiver blocks only itself.

A failed attempt is parked with its next attempt time (exponential backoff from the receiver's
``backoff_initial`` up to ``backoff_max``); :meth:`ReceiverWorker.requeue_due` — called from the
notifier's ``tick`` with the notifier's clock — puts due retries back on the queue, so tests move
time by hand instead of sleeping.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from alerts.notify.clock import Clock
from alerts.notify.metrics import NotifyMetrics
from alerts.notify.model import DeliveryError, Notification
from alerts.notify.receivers import Sender
from alerts.notify.routes import AnyReceiver
from alerts.notify.store import NotificationStore

log = structlog.get_logger(__name__)

MAX_PARKED = 10_000  # retries waiting per receiver; beyond this the oldest are given up


@dataclass(kw_only=True)
class Delivery:
    """A notification on its way to one receiver."""

    notification: Notification
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None


def backoff(cfg: AnyReceiver, attempts: int) -> timedelta:
    """Wait before attempt ``attempts + 1``: initial x 2^(attempts-1), capped at backoff_max."""
    factor = 2 ** min(max(0, attempts - 1), 40)  # capped: no overflow of timedelta
    seconds = min(cfg.backoff_initial.total_seconds() * factor, cfg.backoff_max.total_seconds())
    return timedelta(seconds=seconds)


class ReceiverWorker:
    """Delivers to one receiver in its own thread, with retries."""

    def __init__(
        self,
        cfg: AnyReceiver,
        sender: Sender,
        *,
        clock: Clock,
        store: NotificationStore | None = None,
        metrics: NotifyMetrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.sender = sender
        self.clock = clock
        self.store = store
        self.counts: Counter[str] = Counter()  # sent, failed (attempts), given_up, dropped
        self._queue: queue.Queue[Delivery | None] = queue.Queue(maxsize=cfg.queue_size)
        self._parked: list[Delivery] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0  # queued or being attempted
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        """The receiver's name."""
        return self.cfg.name

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"notify-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the attempt in progress, then stop (queued deliveries are left undone)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with self._lock:
            self._busy = 0
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            log.warning("notification_worker_stop_blocked", receiver=self.name)
        thread.join(timeout_s)
        self.sender.close()

    def enqueue(self, n: Notification) -> None:
        """Queue ``n``; when the queue is full, park it for the next tick instead."""
        self._offer(Delivery(notification=n))

    def _offer(self, d: Delivery) -> None:
        with self._lock:
            self._busy += 1
        try:
            self._queue.put_nowait(d)
        except queue.Full:
            with self._lock:
                self._busy -= 1
                self._idle.notify_all()
            d.next_attempt_at = self.clock.now() + self.cfg.backoff_initial
            self._park(d, reason="queue_full")

    def _park(self, d: Delivery, *, reason: str) -> None:
        overflow: Delivery | None = None
        with self._lock:
            self._parked.append(d)
            if len(self._parked) > MAX_PARKED:
                self._parked.sort(key=lambda p: p.notification.created_at)
                overflow = self._parked.pop(0)
        if reason == "queue_full":
            log.warning(
                "notification_deferred",
                receiver=self.name,
                notification_id=str(d.notification.id),
                reason=reason,
            )
        if overflow is not None:
            self._give_up(overflow, "too many notifications waiting for this receiver")

    def requeue_due(self, now: datetime) -> int:
        """Put retries whose time has come back on the queue; return how many."""
        due: list[Delivery] = []
        keep: list[Delivery] = []
        with self._lock:
            for d in self._parked:
                (due if d.next_attempt_at is None or d.next_attempt_at <= now else keep).append(d)
            self._parked = keep
        for d in due:
            self._offer(d)
        return len(due)

    @property
    def parked(self) -> int:
        """Deliveries waiting for a retry."""
        with self._lock:
            return len(self._parked)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is queued or being attempted (parked retries do not count)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout_s)

    def _run(self) -> None:
        while True:
            d = self._queue.get()
            if d is None:
                return
            try:
                self._attempt(d)
            except Exception:  # a bug in a sender must not kill the receiver's worker
                log.exception("notification_worker_error", receiver=self.name)
            finally:
                with self._lock:
                    self._busy = max(0, self._busy - 1)
                    self._idle.notify_all()

    def _record(self, d: Delivery, status: str, at: datetime) -> None:
        if self.store is not None:
            self.store.record(
                d.notification,
                receiver=self.name,
                receiver_type=self.cfg.type,
                status=status,
                attempts=d.attempts,
                at=at,
                next_attempt_at=d.next_attempt_at if status == "failed" else None,
                last_error=d.last_error,
            )

    def _attempt(self, d: Delivery) -> None:
        n = d.notification
        if d.attempts == 0:
            self._record(d, "pending", self.clock.now())
        d.attempts += 1
        try:
            self.sender.send(n)
        except DeliveryError as err:
            now = self.clock.now()
            d.last_error = str(err)
            self.counts["failed"] += 1
            if self.metrics is not None:
                self.metrics.failed.labels(self.name).inc()
            if err.permanent or d.attempts >= self.cfg.max_attempts:
                self._give_up(d, str(err))
                return
            d.next_attempt_at = now + backoff(self.cfg, d.attempts)
            log.warning(
                "notification_attempt_failed",
                receiver=self.name,
                notification_id=str(n.id),
                purpose=n.purpose.value,
                attempt=d.attempts,
                error=str(err),
                next_attempt_at=d.next_attempt_at.isoformat(),
            )
            self._record(d, "failed", now)
            self._park(d, reason="retry")
            return
        now = self.clock.now()
        d.last_error = None
        self.counts["sent"] += 1
        if self.metrics is not None:
            self.metrics.sent.labels(self.name).inc()
        log.info(
            "notification_sent",
            receiver=self.name,
            notification_id=str(n.id),
            purpose=n.purpose.value,
            level=n.level,
            group_key=n.group_key,
            alerts=len(n.alerts),
            attempt=d.attempts,
        )
        self._record(d, "sent", now)

    def _give_up(self, d: Delivery, error: str) -> None:
        d.last_error = error
        d.next_attempt_at = None
        self.counts["given_up"] += 1
        if self.metrics is not None:
            self.metrics.given_up.labels(self.name).inc()
        log.error(
            "notification_given_up",
            receiver=self.name,
            notification_id=str(d.notification.id),
            purpose=d.notification.purpose.value,
            attempts=d.attempts,
            error=error,
        )
        self._record(d, "given_up", self.clock.now())

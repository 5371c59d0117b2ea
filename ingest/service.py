"""The ingest service: MQTT deliveries -> decoded batch -> one transaction -> acks -> consumers.

Threads: paho's network thread only puts deliveries on a queue; a decode thread validates and
batches them; a writer thread writes each batch in one transaction, then acknowledges its
messages and hands it on. Batches pass from decoder to writer through a one-slot queue, in
order, so acks go out in arrival order and only after the commit (or the dead letter) that
covers the message, while the next batch is decoded during the current write. A database
error keeps the batch and its messages un-acknowledged and retries with backoff; the decoder
then waits with one more batch and Receive Maximum stops the broker from sending more. After
each commit the writer hands a :class:`~cityops.batch.CommittedBatch` to every consumer in
order; a consumer's exception is logged and counted, never lost data.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import structlog

from cityops import registry_version
from cityops.batch import BatchConsumer, CommittedBatch, KindBatch, StatusChange
from cityops.catalog import Kind
from cityops.db import pool
from cityops.errors import DatabaseError
from cityops.settings import Settings
from ingest.batcher import Delivery, PendingBatch
from ingest.client import MqttSource
from ingest.decode import Decoder, Reason, ms_to_datetime
from ingest.metrics import IngestMetrics
from ingest.partition import Partition
from ingest.registry_cache import RegistryCache, RegistrySnapshot, load_snapshot
from ingest.writer import WriteResult, prepare_connection, write_batch

_T = TypeVar("_T")
log = structlog.get_logger(__name__)

REQUIRED_TABLES = ("devices", "dead_letters", "complaints", "device_state", "device_status_events")
_NAP_S = 0.002
_RETRYABLE = (psycopg.OperationalError, psycopg.InterfaceError, DatabaseError)


class _GaveUpError(Exception):
    """The service is stopping and the database did not come back in time."""


class _WriterGoneError(Exception):
    """The writer thread has stopped; the decoder cannot hand on batches."""


class IngestService:
    """One ingest worker: subscribe, store each reading once, acknowledge, hand on."""

    def __init__(
        self,
        settings: Settings,
        consumers: Sequence[BatchConsumer] = (),
        *,
        client_id: str | None = None,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.consumers = tuple(consumers)
        self.metrics = metrics or IngestMetrics()
        cfg = settings.ingest
        self._queue: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None  # the writer's
        self._registry_conn: psycopg.Connection[Any] | None = None
        self._registry_lock = threading.Lock()
        self._batches: queue.Queue[PendingBatch | None] = queue.Queue(maxsize=1)
        self._added = 0
        self._acked = 0
        self._seq = 0
        self.rows_committed = 0  # reading rows newly stored (a plain int: cheap to poll)
        self.db_ok = False
        self.registry = RegistryCache(
            self._load_registry,
            refresh_s=cfg.registry_refresh_s,
            miss_refresh_s=cfg.registry_miss_refresh_s,
            version=self._registry_version,
        )
        self.decoder = Decoder(
            self.registry,
            root=cfg.topic_root,
            max_payload_bytes=cfg.max_payload_bytes,
            auto_register_area=cfg.auto_register_area if cfg.auto_register else None,
            partition=Partition(cfg.partition, cfg.partitions),
        )
        self._max_messages = max(1, cfg.receive_maximum // 2)
        self.source = MqttSource(
            settings, self._queue.put, client_id=client_id or f"{settings.mqtt.client_id}-ingest"
        )
        self._worker = threading.Thread(target=self._run, name="ingest-decode", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="ingest-write", daemon=True)
        self.metrics.queue_depth.set_function(self._queue.qsize)
        self.metrics.unacked.set_function(lambda: self._queue.qsize() + self._added - self._acked)
        self.metrics.broker_up.set_function(lambda: 1.0 if self.source.connected else 0.0)
        # the writer's view: 0 while batch writes fail and are retried (idle: the last outcome)
        self.metrics.db_up.set_function(lambda: 1.0 if self.db_ok else 0.0)

    # --- life cycle ----------------------------------------------------------------------------

    def start(self, *, wait_subscribed_s: float = 0.0) -> None:
        """Connect to the database (waiting for it), load the registry, subscribe."""
        self._connect_with_retry()
        self._check_schema()
        cfg = self.settings.ingest
        if cfg.auto_register:
            if cfg.auto_register_area is None:
                raise DatabaseError("ingest.auto_register needs ingest.auto_register_area")
            self.registry.reload()
            if not self.registry.has_area(cfg.auto_register_area):
                raise DatabaseError(
                    f"ingest.auto_register_area {cfg.auto_register_area!r} is not a registered "
                    "area; import it first (cityops areas import)"
                )
        self.registry.reload()
        self._writer.start()
        self._worker.start()
        self.source.start()
        if wait_subscribed_s > 0:
            self.source.wait_subscribed(wait_subscribed_s)

    def request_stop(self) -> None:
        """Ask the worker to flush what it has and stop (safe from a signal handler)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """``request_stop`` or ``stop`` was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Flush and acknowledge the current batch, then disconnect from the broker."""
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join(self.settings.ingest.shutdown_timeout_s + 10)
        self.source.stop()
        for conn in (self._conn, self._registry_conn):
            if conn is not None:
                conn.close()
        log.info("ingest_stopped")

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the worker has stopped."""
        return self._stopped.wait(timeout_s)

    def readiness(self) -> dict[str, Any]:
        """Database and broker connectivity, for /readyz."""
        db_probe = False
        error: str | None = None
        try:
            with pool.connect(self.settings.db, autocommit=True) as conn:
                conn.execute("SELECT 1")
            db_probe = True
        except DatabaseError as err:
            error = str(err)
        return {
            "database": db_probe and self.db_ok,
            "broker": self.source.connected,
            "database_error": error,
            "broker_error": self.source.last_error,
            "worker": self._worker.is_alive() and self._writer.is_alive(),
            "queue_depth": self._queue.qsize(),
        }

    # --- database ------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = pool.connect(self.settings.db)
        try:
            prepare_connection(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self.db_ok = True
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _connect_with_retry(self) -> None:
        delay = self.settings.ingest.retry_initial_s
        while True:
            try:
                self._connect()
                return
            except _RETRYABLE as err:
                if self._stop.is_set():
                    raise
                log.warning("ingest_db_unavailable", error=str(err), retry_in_s=delay)
                time.sleep(delay)
                delay = min(delay * 2, self.settings.ingest.retry_max_s)

    def _check_schema(self) -> None:
        conn = self._connect()
        missing = [
            t
            for t in REQUIRED_TABLES
            if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone() == (None,)
        ]
        conn.commit()
        if missing:
            raise DatabaseError(
                f"table(s) {', '.join(missing)} missing: run `cityops db migrate` first"
            )

    def _load_registry(self) -> RegistrySnapshot:
        return self._on_registry_conn(load_snapshot)

    def _registry_version(self) -> int | None:
        def read(conn: psycopg.Connection[Any]) -> int | None:
            try:
                return registry_version.read(conn)
            finally:
                conn.rollback()  # no transaction left open between refreshes

        return self._on_registry_conn(read)

    def _on_registry_conn(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        with self._registry_lock:
            conn = self._registry_conn
            if conn is None or conn.closed or conn.broken:
                conn = self._registry_conn = pool.connect(self.settings.db)
            try:
                return work(conn)
            except psycopg.Error:
                conn.close()
                self._registry_conn = None
                raise

    # --- the worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        cfg = self.settings.ingest
        max_age = cfg.batch_max_ms / 1000.0
        batch = PendingBatch()
        get = self._queue.get
        try:
            while True:
                stopping = self._stop.is_set()
                delivery: Delivery | None = None
                try:
                    if batch.started is None:
                        delivery = get(timeout=0.2)  # idle: the first message wakes us
                    else:
                        delivery = self._queue.get_nowait()
                except queue.Empty:
                    if batch.started is not None:
                        # A batch is open and the queue is empty: poll in short naps rather
                        # than being woken per message (a wake-up per message costs more than
                        # the decoding; the nap adds at most _NAP_S to the latency).
                        left = batch.started + max_age - time.monotonic()
                        if left > 0:
                            time.sleep(min(_NAP_S, left))
                if delivery is not None:
                    self._take(batch, delivery)
                full = (
                    batch.row_count >= cfg.batch_max_rows
                    or len(batch.deliveries) >= self._max_messages
                )
                aged = batch.started is not None and (time.monotonic() - batch.started >= max_age)
                if not batch.empty and (full or aged or stopping):
                    self._hand_to_writer(batch)
                    batch = PendingBatch()
                if stopping and self._queue.empty() and batch.empty:
                    break
        except _WriterGoneError:
            log.error("ingest_writer_stopped")
        except Exception:
            log.exception("ingest_decoder_crashed")
        finally:
            self._hand_to_writer(None)
            self._writer.join(self.settings.ingest.shutdown_timeout_s + 5)
            self._stopped.set()

    def _hand_to_writer(self, batch: PendingBatch | None) -> None:
        """Queue a batch for the writer (waits while it is busy: back-pressure)."""
        while self._writer.is_alive():
            try:
                self._batches.put(batch, timeout=0.25)
                return
            except queue.Full:
                continue
        if batch is not None:
            raise _WriterGoneError

    def _write_loop(self) -> None:
        try:
            while True:
                batch = self._batches.get()
                if batch is None:
                    return
                self._flush(batch)
        except _GaveUpError:
            log.error("ingest_stopped_without_flush", reason="database unavailable at shutdown")
        except Exception:
            log.exception("ingest_writer_crashed")

    def _take(self, batch: PendingBatch, delivery: Delivery) -> None:
        """Decode ``delivery`` and whatever else is queued, until the batch is full."""
        max_rows = self.settings.ingest.batch_max_rows
        max_messages = self._max_messages
        deliveries = batch.deliveries
        decode = self.decoder.decode
        get_nowait = self._queue.get_nowait
        readings_before = batch.readings_received
        taken = 0
        if batch.started is None:
            batch.started = time.monotonic()
        try:
            while True:
                deliveries.append(delivery)
                taken += 1
                try:
                    decode(delivery.topic, delivery.payload, delivery.received_ms, batch)
                except Exception as err:  # a bug must not stop ingest or lose the message
                    log.exception("ingest_decode_failed", topic=delivery.topic)
                    batch.dead_letter(
                        delivery.received_ms,
                        delivery.topic,
                        delivery.payload,
                        Reason.DECODE_ERROR,
                        f"{type(err).__name__}: {err}",
                    )
                if batch.row_count >= max_rows or len(deliveries) >= max_messages:
                    break
                try:
                    delivery = get_nowait()
                except queue.Empty:
                    break
        finally:
            # counted per run of queued messages, not per message (cheaper, same totals)
            self._added += taken
            self.metrics.messages.inc(taken)
            if batch.skipped:
                self.metrics.partition_skipped.inc(batch.skipped)
                batch.skipped = 0
            if batch.readings_received != readings_before:
                self.metrics.readings.inc(batch.readings_received - readings_before)

    def _flush(self, batch: PendingBatch) -> None:
        started = time.monotonic()
        result = self._write(batch)
        elapsed = time.monotonic() - started
        stale = self.source.ack_all(batch.deliveries)
        if stale:
            self.metrics.stale_acks.inc(stale)
        self._acked += len(batch.deliveries)
        self._record(batch, result, elapsed)
        if self.consumers:
            self._hand_on(batch, result)

    def _write(self, batch: PendingBatch) -> WriteResult:
        """Write the batch, retrying database outages; split it if the database rejects it."""
        try:
            return self._write_retrying(batch)
        except (*_RETRYABLE, _GaveUpError):
            raise
        except Exception as err:  # refused by the database (or unwritable): never a poison loop
            if len(batch.deliveries) <= 1:
                return self._write_rejected(batch, err)
            log.warning("ingest_batch_rejected_splitting", error=str(err))
            total = WriteResult(new_keys={} if self.consumers else None)
            for delivery in batch.deliveries:
                single = PendingBatch()
                single.deliveries.append(delivery)
                self.decoder.decode(delivery.topic, delivery.payload, delivery.received_ms, single)
                part = self._write(single)
                _merge(total, part)
            return total

    def _write_rejected(self, batch: PendingBatch, err: Exception) -> WriteResult:
        """Dead-letter a single message whose rows the database refused."""
        replacement = PendingBatch()
        for d in batch.deliveries:
            replacement.dead_letter(
                d.received_ms, d.topic, d.payload, Reason.DATABASE_REJECTED, str(err).strip()
            )
        return self._write_retrying(replacement)

    def _write_retrying(self, batch: PendingBatch) -> WriteResult:
        cfg = self.settings.ingest
        delay = cfg.retry_initial_s
        give_up_at: float | None = None
        while True:
            try:
                conn = self._connect()
                result = write_batch(conn, batch, want_keys=bool(self.consumers))
                self.db_ok = True
                return result
            except _RETRYABLE as err:
                self.db_ok = False
                self.metrics.db_retries.inc()
                self._drop_connection()
                if self._stop.is_set():
                    if give_up_at is None:
                        give_up_at = time.monotonic() + cfg.shutdown_timeout_s
                    if time.monotonic() >= give_up_at:
                        raise _GaveUpError from err
                log.warning("ingest_db_write_failed", error=str(err).strip(), retry_in_s=delay)
                time.sleep(delay)
                delay = min(delay * 2, cfg.retry_max_s)

    def _record(self, batch: PendingBatch, result: WriteResult, elapsed: float) -> None:
        m = self.metrics
        m.commit_seconds.observe(elapsed)
        m.batch_rows.observe(batch.row_count)
        m.batch_messages.observe(len(batch.deliveries))
        if batch.started is not None:
            m.receive_to_commit.observe(time.monotonic() - batch.started)
        for kind, n in result.stored.items():
            m.rows_stored.labels(kind.value).inc(n)
            self.rows_committed += n
        for kind, n in result.duplicates.items():
            if n:
                m.duplicates.labels(kind.value).inc(n)
        for d in batch.dead_letters:
            m.dead_letters.labels(d.reason).inc()
        for d in result.conflicts:
            m.dead_letters.labels(d.reason).inc()
        if result.complaints_stored:
            m.complaints.inc(len(result.complaints_stored))
        if result.statuses_stored:
            m.statuses.inc(len(result.statuses_stored))
        now_ms = time.time_ns() // 1_000_000
        for rows in batch.readings.values():
            step = max(1, len(rows) // 100)
            for row in rows[::step]:
                m.reading_age.observe(max(0.0, (now_ms - row[1]) / 1000.0))

    def _hand_on(self, batch: PendingBatch, result: WriteResult) -> None:
        self._seq += 1
        readings: dict[Kind, KindBatch] = {}
        new_keys = result.new_keys or {}
        for kind, rows in batch.readings.items():
            keys = new_keys.get(kind, set())
            picked = []
            positions = []
            for row, position in zip(rows, batch.positions[kind], strict=True):
                key = (row[0], row[1])
                if key in keys:
                    keys.discard(key)  # the first row with this key is the one stored
                    picked.append(row)
                    positions.append(position)
            if picked:
                readings[kind] = KindBatch.from_stored(kind, picked, positions=positions)
        stored_ids = set(result.complaints_stored)
        complaints = []
        for c in batch.complaints:
            if c["complaint_id"] in stored_ids:
                stored_ids.discard(c["complaint_id"])
                complaints.append(c)
        stored_statuses = set(result.statuses_stored)
        statuses = []
        for s in batch.statuses:
            if s in stored_statuses:
                stored_statuses.discard(s)  # a repeat within the batch was not stored twice
                if s[1] != "gateway":
                    statuses.append(
                        StatusChange(
                            device_id=s[0], kind=Kind(s[1]), online=s[2], ts=ms_to_datetime(s[3])
                        )
                    )
        committed = CommittedBatch(
            seq=self._seq,
            committed_at=datetime.now(UTC),
            readings=readings,
            complaints=complaints,
            status_changes=statuses,
        )
        for consumer in self.consumers:
            try:
                consumer.on_batch(committed)
            except Exception:
                name = type(consumer).__name__
                self.metrics.consumer_errors.labels(name).inc()
                log.exception("ingest_consumer_failed", consumer=name, seq=self._seq)


def _merge(total: WriteResult, part: WriteResult) -> None:
    for kind, n in part.stored.items():
        total.stored[kind] = total.stored.get(kind, 0) + n
    for kind, n in part.duplicates.items():
        total.duplicates[kind] = total.duplicates.get(kind, 0) + n
    if total.new_keys is not None and part.new_keys is not None:
        for kind, keys in part.new_keys.items():
            total.new_keys.setdefault(kind, set()).update(keys)
    total.complaints_stored.extend(part.complaints_stored)
    total.statuses_stored.extend(part.statuses_stored)
    total.dead_letters += part.dead_letters
    total.conflicts.extend(part.conflicts)

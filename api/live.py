"""Live feed over Server-Sent Events: alert changes, per-area snapshots, chosen devices.

One :class:`LiveHub` per API process reads the database and fans events out to every connected
client through a bounded queue per client (``api.sse_client_buffer``). Putting an event into a
queue never waits: a client whose queue is full is cut off (it reconnects with ``Last-Event-ID``
and resumes), so one slow browser cannot slow the hub or the other clients.

Sources, all from the database the API already reads (the API process talks to no broker):

- alert changes: ``alert_events`` rows, pushed by LISTEN/NOTIFY (migration 0011) with a poll as a
  fallback; the row id is the SSE ``id:``, so ``Last-Event-ID`` resumes exactly;
- per-area snapshots: latest hourly rates, device counts by state and open alerts per area,
  recomputed every ``snapshot_interval_s``; only areas whose snapshot changed are sent, and a
  new client first gets every area's current snapshot;
- readings of chosen devices: the committed rows of the devices clients asked for, polled every
  ``poll_interval_s`` (committed, validated rows only, the same data the REST history returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
import psycopg
import structlog
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.deps import Role, require_role
from api.errors import ApiError, bad_request
from cityops.catalog import Kind, kind_spec
from cityops.db.pool import describe_dsn

log = structlog.get_logger(__name__)
# How long stop() waits for the background tasks and then for the pool's connections.
STOP_TIMEOUT_S = 5.0

router = APIRouter(tags=["live"])

NOTIFY_CHANNEL = "cityops_alert_events"
EVENT_TYPES = ("alert", "snapshot", "reading")
SEVERITIES = ("info", "warning", "critical")
MAX_FILTER_DEVICES = 200
CATCH_UP_PAGE = 500
# A gap in alert_events ids is an insert not yet committed (or rolled back): wait this long for
# it before giving up, so an event that commits out of id order is still sent.
GAP_GRACE_S = 10.0

ALERT_EVENTS_SQL = """
SELECT e.id, e.alert_id, e.at, e.event, e.actor, e.detail,
       a.rule, a.kind, a.severity, a.state, a.area_code, a.device_id, a.summary, a.labels,
       a.started_at, a.fired_at, a.resolved_at, a.acked_by, a.acked_at, a.assigned_to,
       a.case_id, a.flapping, a.silenced_by IS NOT NULL AS silenced,
       a.fingerprint, a.inhibited_by
FROM alert_events e JOIN alerts a ON a.id = e.alert_id
WHERE e.id > %(after)s
ORDER BY e.id
LIMIT %(limit)s
"""
MAX_EVENT_ID_SQL = "SELECT coalesce(max(id), 0) AS high FROM alert_events"

# Per (area, kind, metric) the latest complete hour: the newest hour of a kind is still filling
# (its denominators cover the whole hour, so its rate reads low until the hour ends) and is used
# only when it is the only one. Hours are looked for around now, and ahead of it, so a simulator
# running ahead of the wall clock (the accelerated demo) still shows its newest hours.
SNAPSHOT_RATES_SQL = """
WITH newest AS (
    SELECT kind, max(hour) AS hour FROM rates_hourly
    WHERE hour >= now() - interval '3 hours' AND hour <= now() + interval '25 hours'
    GROUP BY kind
)
SELECT DISTINCT ON (r.area_code, r.kind, r.metric)
       r.area_code, r.kind, r.metric, r.hour, r.numerator, r.denominator,
       r.hour = n.hour AS partial
FROM rates_hourly r JOIN newest n ON n.kind = r.kind
WHERE r.hour >= n.hour - interval '1 hour' AND r.hour <= n.hour
ORDER BY r.area_code, r.kind, r.metric, r.hour = n.hour, r.hour DESC
"""
SNAPSHOT_DEVICES_SQL = """
SELECT d.area_code, d.kind,
       count(*) AS total,
       count(*) FILTER (WHERE s.online) AS online,
       count(*) FILTER (WHERE s.online IS FALSE) AS offline,
       count(*) FILTER (WHERE d.status = 'maintenance') AS maintenance
FROM devices d LEFT JOIN device_state s ON s.device_id = d.device_id
WHERE d.status <> 'retired'
GROUP BY d.area_code, d.kind
"""
SNAPSHOT_ALERTS_SQL = """
SELECT area_code, severity,
       count(*) AS firing,
       count(*) FILTER (WHERE acked_at IS NULL) AS unacked
FROM alerts
WHERE state = 'firing' AND NOT cancelled AND area_code IS NOT NULL
GROUP BY area_code, severity
"""
AREAS_SQL = "SELECT code, name_zh, name_en FROM areas ORDER BY code"
DEVICE_KINDS_SQL = "SELECT device_id, kind, area_code FROM devices WHERE device_id = ANY(%s)"
MAP_SQL = """
SELECT d.device_id, d.kind, d.area_code, d.lon, d.lat,
       CASE WHEN EXISTS (SELECT 1 FROM alerts a
                         WHERE a.device_id = d.device_id AND a.state = 'firing'
                           AND NOT a.cancelled) THEN 'alarm'
            WHEN d.status = 'maintenance' THEN 'maintenance'
            WHEN s.online IS FALSE THEN 'offline'
            WHEN s.online THEN 'online'
            ELSE 'unknown' END AS state
FROM devices d LEFT JOIN device_state s ON s.device_id = d.device_id
WHERE d.status <> 'retired' AND d.lon IS NOT NULL AND d.lat IS NOT NULL
  AND (%(area)s::text IS NULL OR d.area_code = %(area)s)
ORDER BY d.device_id
LIMIT %(limit)s
"""
# A district (about 48,000 devices) fits; a whole city needs an area filter (?area=).
MAP_LIMIT = 60_000


async def _rows(
    conn: psycopg.AsyncConnection[Any], query: Any, params: Any = None
) -> list[dict[str, Any]]:
    """Run ``query`` and return its rows as dicts."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One event of the feed, with the facts client filters match against."""

    type: str
    data: Mapping[str, Any]
    id: int | None = None
    area: str | None = None
    kind: str | None = None
    severity: str | None = None
    device: str | None = None

    def encode(self) -> bytes:
        """The event as an SSE frame (``id:`` only for alert events, which can be resumed)."""
        head = f"event: {self.type}\n"
        if self.id is not None:
            head = f"id: {self.id}\n" + head
        body = orjson.dumps(self.data, default=_json_default)
        return head.encode() + b"data: " + body + b"\n\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveFilter:
    """What one client asked for; ``None`` means no restriction."""

    types: frozenset[str] = frozenset(("alert", "snapshot"))
    areas: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    severities: frozenset[str] | None = None
    devices: frozenset[str] = frozenset()

    def wants(self, event: LiveEvent) -> bool:
        """Whether ``event`` passes this filter."""
        if event.type not in self.types:
            return False
        if event.type == "reading":
            return event.device in self.devices
        if self.areas is not None and event.area not in self.areas:
            return False
        if event.type == "snapshot":
            return True
        if self.kinds is not None and event.kind not in self.kinds:
            return False
        return self.severities is None or event.severity in self.severities


@dataclass(eq=False)
class LiveClient:
    """A connected client: its filter and its bounded queue of events to send."""

    filter: LiveFilter
    queue: asyncio.Queue[LiveEvent | None]
    overflowed: bool = False
    closed: bool = False

    def offer(self, event: LiveEvent) -> bool:
        """Queue ``event`` without waiting; False when the queue is full (the client is cut)."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True

    def close(self) -> None:
        """Wake the client's stream so it ends (a full queue is drained first: no room needed)."""
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


@dataclass
class _Gaps:
    """Alert event ids not seen yet below the highest seen, with when each gap was noticed."""

    high: int = 0
    missing: dict[int, float] = field(default_factory=dict)

    def floor(self) -> int:
        return min(self.missing) - 1 if self.missing else self.high

    def accept(self, event_id: int, now: float) -> bool:
        """Record ``event_id``; False when it was sent already."""
        if event_id in self.missing:
            del self.missing[event_id]
            return True
        if event_id <= self.high:
            return False
        for gap in range(self.high + 1, min(event_id, self.high + 1000)):
            self.missing[gap] = now
        self.high = event_id
        return True

    def expire(self, now: float) -> None:
        for gap in [g for g, seen in self.missing.items() if now - seen > GAP_GRACE_S]:
            del self.missing[gap]


def alert_event(row: Mapping[str, Any]) -> LiveEvent:
    """A joined alert_events/alerts row as an ``alert`` event."""
    data = {
        "event_id": row["id"],
        "event": row["event"],
        "at": row["at"],
        "actor": row["actor"],
        "detail": row["detail"],
        "alert": {
            "id": row["alert_id"],
            "rule": row["rule"],
            "kind": row["kind"],
            "severity": row["severity"],
            "state": row["state"],
            "area_code": row["area_code"],
            "device_id": row["device_id"],
            "summary": row["summary"],
            "labels": row["labels"],
            "started_at": row["started_at"],
            "fired_at": row["fired_at"],
            "resolved_at": row["resolved_at"],
            "acked_by": row["acked_by"],
            "acked_at": row["acked_at"],
            "assigned_to": row["assigned_to"],
            "case_id": row["case_id"],
            "flapping": row["flapping"],
            "silenced": row["silenced"],
            "fingerprint": row.get("fingerprint", ""),
            "inhibited_by": row.get("inhibited_by"),
        },
    }
    return LiveEvent(
        "alert",
        data,
        id=int(row["id"]),
        area=row["area_code"],
        kind=row["kind"],
        severity=row["severity"],
        device=row["device_id"],
    )


def build_snapshots(
    areas: Iterable[Mapping[str, Any]],
    rates: Iterable[Mapping[str, Any]],
    devices: Iterable[Mapping[str, Any]],
    alerts: Iterable[Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Per-area snapshot bodies (without a timestamp) from the three snapshot queries."""
    out: dict[str, dict[str, Any]] = {}
    for a in areas:
        out[a["code"]] = {
            "area": a["code"],
            "name": a["name_zh"],
            "name_en": a["name_en"],
            "rates": {},
            "devices": {},
            "alerts": {"firing": 0, "unacked": 0, "by_severity": {}},
        }
    for r in rates:
        snap = out.get(r["area_code"])
        if snap is None:
            continue
        num, den = float(r["numerator"]), float(r["denominator"])
        snap["rates"][r["metric"]] = {
            "kind": r["kind"],
            "value": num / den if den else None,
            "numerator": num,
            "denominator": den,
            "hour": r["hour"].isoformat(),
            "partial": r["partial"],
        }
    for d in devices:
        snap = out.get(d["area_code"])
        if snap is None:
            continue
        snap["devices"][d["kind"]] = {
            "total": d["total"],
            "online": d["online"],
            "offline": d["offline"],
            "maintenance": d["maintenance"],
        }
    for al in alerts:
        snap = out.get(al["area_code"])
        if snap is None:
            continue
        counts = snap["alerts"]
        counts["firing"] += al["firing"]
        counts["unacked"] += al["unacked"]
        counts["by_severity"][al["severity"]] = al["firing"]
    return out


def _reading_event(kind: str, area: str | None, row: Mapping[str, Any]) -> LiveEvent:
    values = {
        k: v
        for k, v in row.items()
        if k not in ("device_id", "ts", "received_at") and v is not None
    }
    data = {"device_id": row["device_id"], "kind": kind, "area": area, "ts": row["ts"]}
    data["values"] = values
    return LiveEvent("reading", data, area=area, kind=kind, device=row["device_id"])


READING_PAGE = 2000  # rows per query while reading a kind's overlap window
READING_READ_MAX = 100_000  # rows read per kind and poll at most (the mark moves on regardless)


class LiveHub:
    """Background sources of live events, shared by every connected client."""

    def __init__(
        self,
        settings: Any,
        pool: Any = None,
        *,
        snapshot_interval_s: float = 5.0,
        poll_interval_s: float = 2.0,
    ) -> None:
        # ``pool`` is the app's request pool; the hub keeps its own small async pool and a
        # LISTEN connection so a busy request pool never delays the feed (and vice versa).
        self.settings = settings
        self.pool = pool
        self.snapshot_interval_s = snapshot_interval_s
        self.poll_interval_s = poll_interval_s
        self.buffer = int(settings.api.sse_client_buffer)
        self.heartbeat_s = float(settings.api.sse_heartbeat_s)
        self.clients: set[LiveClient] = set()
        self.snapshots: dict[str, LiveEvent] = {}
        self.dropped_clients = 0
        self.events_published = 0
        self._gaps = _Gaps()
        self._wake = asyncio.Event()
        self._db: AsyncConnectionPool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._device_meta: dict[str, tuple[str, str]] = {}  # device -> (kind, area)
        self._reading_marks: dict[str, datetime] = {}  # kind -> newest received_at sent
        self._reading_floors: dict[str, datetime] = {}  # kind -> when following it began
        self._reading_seen: dict[tuple[str, datetime], float] = {}
        # readings of one kind sent per poll at most (api.sse_kind_rate_max per second)
        self.kind_cap = max(1, int(float(settings.api.sse_kind_rate_max) * poll_interval_s))
        self.readings_coalesced = 0

    def _pool(self) -> AsyncConnectionPool:
        if self._db is None:
            raise RuntimeError("LiveHub.start() was not called")
        return self._db

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background sources."""
        db = self.settings.db
        options = "-c TimeZone=UTC"
        if db.statement_timeout_ms:
            options += f" -c statement_timeout={db.statement_timeout_ms}"
        self._db = AsyncConnectionPool(
            db.dsn,
            min_size=1,
            max_size=4,
            kwargs={"options": options, "autocommit": True},
            name="live",
            open=False,
        )
        await self._db.open(wait=False)
        self._tasks = [
            asyncio.create_task(self._listen_loop(), name="live-listen"),
            asyncio.create_task(self._alerts_loop(), name="live-alerts"),
            asyncio.create_task(self._snapshots_loop(), name="live-snapshots"),
            asyncio.create_task(self._readings_loop(), name="live-readings"),
        ]
        log.info("live_hub_started", db=describe_dsn(db.dsn))

    async def stop(self) -> None:
        """Stop the background sources and close every client stream."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a task stuck in a database call that ignores cancellation must not hold
            # the API's shutdown (and with it a deploy or a test run) forever.
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            if pending:
                log.warning("live_hub_stop_timeout", tasks=sorted(t.get_name() for t in pending))
        self._tasks = []
        for client in list(self.clients):
            client.close()
        self.clients.clear()
        if self._db is not None:
            await self._db.close(timeout=STOP_TIMEOUT_S)
            self._db = None

    # --- clients ----------------------------------------------------------------------------

    def subscribe(self, live_filter: LiveFilter) -> LiveClient:
        """Register a client; events matching its filter are queued from now on."""
        client = LiveClient(live_filter, asyncio.Queue(maxsize=self.buffer))
        self.clients.add(client)
        return client

    def unsubscribe(self, client: LiveClient) -> None:
        """Forget a client (its stream ended)."""
        self.clients.discard(client)

    def publish(self, event: LiveEvent) -> None:
        """Queue ``event`` for every client that wants it; cut off clients that cannot keep up."""
        self.events_published += 1
        for client in list(self.clients):
            if client.filter.wants(event) and not client.offer(event):
                self.clients.discard(client)
                self.dropped_clients += 1
                log.warning("live_client_too_slow", buffer=self.buffer)

    def current_snapshots(self, live_filter: LiveFilter) -> list[LiveEvent]:
        """The latest snapshot of every area the filter wants (sent to a client on connect)."""
        return [e for e in self.snapshots.values() if live_filter.wants(e)]

    async def catch_up(self, after: int, live_filter: LiveFilter) -> AsyncIterator[LiveEvent]:
        """Alert events after ``after`` that the filter wants, oldest first, page by page."""
        if self._db is None:
            return
        while True:
            async with self._db.connection() as conn:
                rows = await _rows(conn, ALERT_EVENTS_SQL, {"after": after, "limit": CATCH_UP_PAGE})
            for row in rows:
                after = int(row["id"])
                event = alert_event(row)
                if live_filter.wants(event):
                    yield event
            if len(rows) < CATCH_UP_PAGE:
                return

    # --- alert events -----------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        """Hold a LISTEN connection; every notification wakes the alert reader."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.settings.db.dsn, autocommit=True)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
                    self._wake.set()  # catch up whatever was missed while not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as err:
                log.warning("live_listen_failed", error=str(err).strip())
                await asyncio.sleep(min(5.0, self.poll_interval_s * 2))

    async def _alerts_loop(self) -> None:
        first = True
        while True:
            # A notification wakes us at once; the timeout is the fallback poll.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
            self._wake.clear()
            try:
                if first:
                    await self._start_alert_mark()
                    first = False
                await self._read_alert_events()
            except (psycopg.Error, OSError) as err:
                log.warning("live_alerts_failed", error=str(err).strip())

    async def _start_alert_mark(self) -> None:
        """New clients resume with Last-Event-ID: live fan-out starts at the newest event."""
        async with self._pool().connection() as conn:
            rows = await _rows(conn, MAX_EVENT_ID_SQL)
        self._gaps.high = int(rows[0]["high"])

    async def _read_alert_events(self) -> None:
        db = self._pool()
        now = time.monotonic()
        # A burst is published in pages no larger than half a client's buffer, and clients get
        # to send between pages (the next query yields), so a burst alone cuts no client off.
        page = max(1, min(CATCH_UP_PAGE, self.buffer // 2))
        self._gaps.expire(now)
        while True:
            async with db.connection() as conn:
                rows = await _rows(
                    conn, ALERT_EVENTS_SQL, {"after": self._gaps.floor(), "limit": page}
                )
            for row in rows:
                if self._gaps.accept(int(row["id"]), now):
                    self.publish(alert_event(row))
            if len(rows) < page:
                return

    # --- snapshots --------------------------------------------------------------------------

    async def _snapshots_loop(self) -> None:
        while True:
            try:
                await self.refresh_snapshots()
            except (psycopg.Error, OSError) as err:
                log.warning("live_snapshots_failed", error=str(err).strip())
            await asyncio.sleep(self.snapshot_interval_s)

    async def refresh_snapshots(self) -> int:
        """Recompute every area's snapshot; publish those that changed; return how many."""
        if self._db is None:
            return 0
        async with self._db.connection() as conn:
            areas = await _rows(conn, AREAS_SQL)
            rates = await _rows(conn, SNAPSHOT_RATES_SQL)
            devices = await _rows(conn, SNAPSHOT_DEVICES_SQL)
            alerts = await _rows(conn, SNAPSHOT_ALERTS_SQL)
        bodies = build_snapshots(areas, rates, devices, alerts)
        ts = datetime.now(UTC).isoformat()
        changed = 0
        for code, body in bodies.items():
            old = self.snapshots.get(code)
            if old is not None and {k: v for k, v in old.data.items() if k != "ts"} == body:
                continue
            event = LiveEvent("snapshot", {**body, "ts": ts}, area=code)
            self.snapshots[code] = event
            self.publish(event)
            changed += 1
        return changed

    # --- readings of chosen devices ---------------------------------------------------------

    async def _readings_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            await self._read_readings_if_needed()

    async def _read_readings_if_needed(self) -> None:
        wanted: set[str] = set()
        for client in self.clients:
            if "reading" in client.filter.types:
                wanted |= client.filter.devices
        if not wanted:
            return
        try:
            await self.read_readings(wanted)
        except (psycopg.Error, OSError) as err:
            log.warning("live_readings_failed", error=str(err).strip())

    async def read_readings(self, wanted: set[str]) -> int:
        """Publish committed readings of ``wanted`` devices received since the last call."""
        if self._db is None:
            return 0
        async with self._db.connection() as conn:
            unknown = sorted(wanted - self._device_meta.keys())
            if unknown:
                for r in await _rows(conn, DEVICE_KINDS_SQL, (unknown,)):
                    self._device_meta[r["device_id"]] = (r["kind"], r["area_code"])
            by_kind: dict[str, list[str]] = {}
            for device in wanted:
                meta = self._device_meta.get(device)
                if meta is not None:
                    by_kind.setdefault(meta[0], []).append(device)
            sent = 0
            now = time.monotonic()
            for kind, ids in by_kind.items():
                sent += await self._read_kind(conn, kind, ids, now)
        # Forget dedup keys well past the overlap window.
        for key in [k for k, seen in self._reading_seen.items() if now - seen > 60]:
            del self._reading_seen[key]
        return sent

    async def _read_kind(
        self, conn: psycopg.AsyncConnection[Any], kind: str, ids: list[str], now: float
    ) -> int:
        table = sql.Identifier(kind_spec(kind).table)
        mark = self._reading_marks.get(kind)
        if mark is None:
            rows = await _rows(conn, "SELECT now() AS now")
            self._reading_marks[kind] = self._reading_floors[kind] = rows[0]["now"]
            return 0
        # received_at is the writer's transaction start, so a batch can commit with a time
        # slightly before the newest one already sent: re-read an overlap and drop duplicates
        # (but nothing from before the hub began following this kind: that is history). The
        # overlap is read page by page (keyset on received_at, device_id, ts), so however many
        # rows it holds the mark moves on: a fixed LIMIT used to return only the already-sent
        # head of the overlap above ~67 readings/s, and the feed stalled for every client.
        first = sql.SQL(
            "SELECT * FROM {} WHERE device_id = ANY(%s) "
            "AND received_at > greatest(%s::timestamptz - interval '30 seconds', %s) "
            "ORDER BY received_at, device_id, ts LIMIT %s"
        ).format(table)
        more = sql.SQL(
            "SELECT * FROM {} WHERE device_id = ANY(%s) "
            "AND (received_at, device_id, ts) > (%s, %s, %s) "
            "ORDER BY received_at, device_id, ts LIMIT %s"
        ).format(table)
        fresh: list[dict[str, Any]] = []
        rows = await _rows(conn, first, (ids, mark, self._reading_floors[kind], READING_PAGE))
        read = 0
        while rows:
            read += len(rows)
            for row in rows:
                mark = max(mark, row["received_at"])
                key = (row["device_id"], row["ts"])
                if key in self._reading_seen:
                    continue
                self._reading_seen[key] = now
                fresh.append(row)
            if len(rows) < READING_PAGE or read >= READING_READ_MAX:
                break
            last = rows[-1]
            rows = await _rows(
                conn, more, (ids, last["received_at"], last["device_id"], last["ts"], READING_PAGE)
            )
        if len(fresh) > self.kind_cap:
            # more than a client can follow: the newest reading of each device, newest first
            newest: dict[str, dict[str, Any]] = {}
            for row in fresh:
                if row["device_id"] not in newest or row["ts"] > newest[row["device_id"]]["ts"]:
                    newest[row["device_id"]] = row
            kept = sorted(newest.values(), key=lambda r: (r["received_at"], r["ts"]))
            kept = kept[-self.kind_cap :]
            self.readings_coalesced += len(fresh) - len(kept)
            log.info("live_readings_coalesced", kind=kind, read=len(fresh), sent=len(kept))
            fresh = kept
        for row in fresh:
            area = self._device_meta.get(row["device_id"], (kind, None))[1]
            self.publish(_reading_event(kind, area, row))
        self._reading_marks[kind] = mark
        return len(fresh)

    # --- the map ----------------------------------------------------------------------------

    async def device_map(self, area: str | None) -> dict[str, Any]:
        """Devices with positions and a display state (alarm, offline, ...), for the schematic."""
        if self._db is None:
            raise ApiError(503, "unavailable", "the live feed is not running")
        async with self._db.connection() as conn:
            rows = await _rows(conn, MAP_SQL, {"area": area, "limit": MAP_LIMIT + 1})
        truncated = len(rows) > MAP_LIMIT
        return {
            "devices": [
                [r["device_id"], r["kind"], r["area_code"], r["lon"], r["lat"], r["state"]]
                for r in rows[:MAP_LIMIT]
            ],
            "columns": ["device_id", "kind", "area", "lon", "lat", "state"],
            "truncated": truncated,
        }


# --- HTTP ---------------------------------------------------------------------------------------


def _split(value: str | None) -> list[str]:
    if value is None:
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_filter(
    *,
    types: str | None = None,
    areas: str | None = None,
    kinds: str | None = None,
    severities: str | None = None,
    devices: str | None = None,
) -> LiveFilter:
    """Build a filter from the query parameters; HTTP 422 naming the bad value otherwise."""
    type_list = _split(types) or (["alert", "snapshot", "reading"] if devices else [])
    type_list = [t.removesuffix("s") for t in type_list]
    for t in type_list:
        if t not in EVENT_TYPES:
            raise bad_request(
                f"types: unknown event type {t!r}; use {', '.join(EVENT_TYPES)}", "types"
            )
    kind_list = _split(kinds)
    known_kinds = {k.value for k in Kind}
    for k in kind_list:
        if k not in known_kinds:
            raise bad_request(
                f"kinds: unknown kind {k!r}; use {', '.join(sorted(known_kinds))}", "kinds"
            )
    severity_list = _split(severities)
    for s in severity_list:
        if s not in SEVERITIES:
            raise bad_request(
                f"severities: unknown severity {s!r}; use {', '.join(SEVERITIES)}", "severities"
            )
    device_list = _split(devices)
    if len(device_list) > MAX_FILTER_DEVICES:
        raise bad_request(
            f"devices: at most {MAX_FILTER_DEVICES} devices per stream ({len(device_list)} given)",
            "devices",
        )
    if "reading" in type_list and not device_list:
        raise bad_request("types=reading needs devices=<id>,<id>,...", "devices")
    return LiveFilter(
        types=frozenset(type_list or ("alert", "snapshot")),
        areas=frozenset(_split(areas)) or None,
        kinds=frozenset(kind_list) or None,
        severities=frozenset(severity_list) or None,
        devices=frozenset(device_list),
    )


def _hub(request: Request) -> LiveHub:
    hub = getattr(request.app.state, "live", None)
    if not isinstance(hub, LiveHub):
        raise ApiError(503, "unavailable", "the live feed is not running in this process")
    return hub


def _last_event_id(header: str | None, query: str | None) -> int | None:
    raw = header if header is not None else query
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(
            f"Last-Event-ID: expected an alert event id, got {raw!r}", "Last-Event-ID"
        ) from None
    if value < 0:
        raise bad_request("Last-Event-ID: must not be negative", "Last-Event-ID")
    return value


_VIEWER = Depends(require_role(Role.VIEWER))


@router.get(
    "/live",
    dependencies=[_VIEWER],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def live_stream(
    request: Request,
    types: Annotated[
        str | None,
        Query(description="Comma-separated: alert, snapshot, reading (default alert,snapshot)."),
    ] = None,
    areas: Annotated[str | None, Query(description="Comma-separated area codes.")] = None,
    kinds: Annotated[
        str | None, Query(description="Comma-separated device kinds (alerts).")
    ] = None,
    severities: Annotated[str | None, Query(description="info, warning, critical.")] = None,
    devices: Annotated[
        str | None,
        Query(description=f"Device ids whose readings to stream (<= {MAX_FILTER_DEVICES})."),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(description="Resume after this alert event id (EventSource sends the header)."),
    ] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Server-Sent Events: ``alert``, ``snapshot`` and ``reading`` events, filtered per client.

    Alert events carry ``id:`` (the alert_events id); reconnecting with ``Last-Event-ID`` replays
    the ones missed. A ``: heartbeat`` comment is sent when idle. A client that falls more than
    ``api.sse_client_buffer`` events behind gets an ``overflow`` event and is disconnected.
    """
    hub = _hub(request)
    live_filter = parse_filter(
        types=types, areas=areas, kinds=kinds, severities=severities, devices=devices
    )
    after = _last_event_id(last_event_id_header, last_event_id)
    return StreamingResponse(
        _event_stream(hub, live_filter, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(
    hub: LiveHub, live_filter: LiveFilter, after: int | None
) -> AsyncIterator[bytes]:
    # Subscribe before catching up so nothing committed in between is lost; events that the
    # catch-up already sent are skipped when they come through the queue as well.
    client = hub.subscribe(live_filter)
    try:
        yield b"retry: 3000\n\n"
        replayed: set[int] = set()
        if after is not None and "alert" in live_filter.types:
            async for old in hub.catch_up(after, live_filter):
                replayed.add(old.id or 0)
                yield old.encode()
        for snap in hub.current_snapshots(live_filter):
            yield snap.encode()
        # An overflowed client was already dropped by the hub: send what it had queued, then
        # say why the stream ends.
        while not (client.overflowed and client.queue.empty()):
            try:
                event = await asyncio.wait_for(client.queue.get(), hub.heartbeat_s)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            if event is None:
                break
            if event.id is not None and event.id in replayed:
                continue
            yield event.encode()
        if client.overflowed:
            yield b'event: overflow\ndata: {"reason": "client too slow; reconnect"}\n\n'
    finally:
        hub.unsubscribe(client)


@router.get("/live/devices", dependencies=[_VIEWER])
async def live_device_map(
    request: Request,
    area: Annotated[str | None, Query(description="Only this area's devices.")] = None,
) -> dict[str, Any]:
    """Every positioned device with its display state, for the operations page's schematic."""
    return await _hub(request).device_map(area)

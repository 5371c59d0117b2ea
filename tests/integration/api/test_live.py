"""The live feed over real HTTP (uvicorn) and a real PostgreSQL: alerts, snapshots, readings,
resume with Last-Event-ID, heartbeats, and a stalled client that must not hold up the others."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from psycopg.types.json import Jsonb

from api.app import create_app
from api.live import LiveHub
from cityops.settings import ApiSettings, Settings
from tests.conftest import free_port
from tests.integration.api.conftest import Keys, api_settings, seed_alert, seed_devices

pytestmark = pytest.mark.pg

# How long a test waits for an event before it fails (a bound on a hang, not a speed claim).
WAIT_S = 30.0


@dataclass
class LiveServer:
    """A uvicorn serving the app on a free loopback port."""

    app: FastAPI
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def hub(self) -> LiveHub:
        """The app's live hub."""
        hub = self.app.state.live
        assert isinstance(hub, LiveHub)
        return hub

    def wait_for_reading_poll(self, kind: str = "heating") -> None:
        """Wait until the hub has polled ``kind``'s readings once (it starts from that point)."""
        deadline = time.monotonic() + WAIT_S
        while kind not in self.hub._reading_marks:
            assert time.monotonic() < deadline, "the hub never polled the readings"
            time.sleep(0.05)


def start_server(settings: Settings) -> LiveServer:
    """Run ``create_app(settings)`` under uvicorn in a thread until it serves."""
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return LiveServer(app, f"http://127.0.0.1:{port}", server, thread)


def stop_server(live: LiveServer) -> None:
    """Ask uvicorn to exit and wait for it (lifespan shutdown stops the hub)."""
    live.server.should_exit = True
    live.thread.join(WAIT_S)
    assert not live.thread.is_alive(), "uvicorn did not stop"


def settings_for(dsn: str, **api: Any) -> Settings:
    """The API test settings with live-feed overrides."""
    base = api_settings(dsn)
    return base.model_copy(update={"api": ApiSettings(**api)})


@pytest.fixture
def live_server(migrated_db: str, keys: Keys) -> Iterator[LiveServer]:
    """The app on the test database with a short heartbeat."""
    seed_devices(migrated_db)
    live = start_server(settings_for(migrated_db, sse_heartbeat_s=0.5))
    try:
        yield live
    finally:
        stop_server(live)


@dataclass
class Event:
    """One parsed SSE event."""

    type: str
    data: Any
    id: int | None = None


@dataclass
class SseReader:
    """Parses an SSE byte stream into events and heartbeat comments."""

    lines: Iterator[str]
    comments: list[str] = field(default_factory=list)

    def next(self) -> Event:
        """The next event (comments and the retry field are recorded and skipped)."""
        fields: dict[str, str] = {}
        for line in self.lines:
            if line == "":
                if "data" in fields:
                    return Event(
                        fields.get("event", "message"),
                        json.loads(fields["data"]),
                        int(fields["id"]) if "id" in fields else None,
                    )
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        raise AssertionError("the stream ended")

    def until(self, predicate: Any, limit: int = 10_000) -> Event:
        """Skip events until one matches ``predicate``."""
        for _ in range(limit):
            event = self.next()
            if predicate(event):
                return event
        raise AssertionError("no matching event")


@pytest.fixture
def stream(live_server: LiveServer, keys: Keys) -> Iterator[Any]:
    """Open SSE streams: ``stream(params, headers) -> SseReader``; all closed at the end."""
    opened: list[Any] = []
    client = httpx.Client(base_url=live_server.url, timeout=httpx.Timeout(WAIT_S))

    def open_stream(params: dict[str, str], headers: dict[str, str] | None = None) -> SseReader:
        cm = client.stream(
            "GET",
            "/api/v1/live",
            params=params,
            headers={**keys.header("viewer"), **(headers or {})},
        )
        response = cm.__enter__()
        opened.append(cm)
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return SseReader(response.iter_lines())

    try:
        yield open_stream
    finally:
        for cm in opened:
            cm.__exit__(None, None, None)
        client.close()


def test_client_receives_alert_changes_and_snapshots(
    migrated_db: str, stream: Any, live_server: LiveServer
) -> None:
    reader = stream({"types": "alert,snapshot", "areas": "CY-JW"})
    first = reader.until(lambda e: e.type == "snapshot")
    assert first.data["area"] == "CY-JW"
    assert first.data["devices"]["streetlight"]["total"] == 2
    assert first.data["alerts"]["firing"] == 0

    other = seed_alert(migrated_db, area="CY-CW", device="SL-3")
    mine = seed_alert(migrated_db, area="CY-JW", device="SL-1", severity="warning")
    alert = reader.until(lambda e: e.type == "alert")
    # The CY-CW alert was filtered out: the first alert event is the CY-JW one.
    assert alert.data["alert"]["id"] == mine != other
    assert alert.data["alert"]["state"] == "firing"
    assert alert.data["alert"]["severity"] == "warning"
    assert alert.data["event"] == "firing"
    assert alert.id is not None
    updated = reader.until(lambda e: e.type == "snapshot" and e.data["alerts"]["firing"] == 1)
    assert updated.data["area"] == "CY-JW"
    assert updated.data["alerts"]["unacked"] == 1


def test_snapshot_rates_use_the_latest_full_hour(migrated_db: str, stream: Any) -> None:
    reader = stream({"types": "snapshot", "areas": "CY-JW"})
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(migrated_db) as conn:
        conn.execute(
            "INSERT INTO rates_hourly (area_code, kind, metric, hour, numerator, denominator) "
            "VALUES ('CY-JW', 'streetlight', 'lighting_rate', %(h1)s, 57, 60), "
            "       ('CY-JW', 'streetlight', 'lighting_rate', %(h0)s, 10, 60), "
            "       ('CY-JW', 'charger', 'charger_availability', %(h0)s, 30, 60)",
            {"h0": now, "h1": now - timedelta(hours=1)},
        )
    snap = reader.until(lambda e: "lighting_rate" in e.data["rates"]).data
    lighting = snap["rates"]["lighting_rate"]
    # The current hour is still filling: the previous, complete hour is shown.
    assert lighting["value"] == pytest.approx(0.95)
    assert lighting["partial"] is False
    assert lighting["hour"] == (now - timedelta(hours=1)).isoformat()
    # A kind with only the filling hour shows that hour, flagged.
    charger = snap["rates"]["charger_availability"]
    assert charger["value"] == pytest.approx(0.5)
    assert charger["partial"] is True


def test_acknowledgement_reaches_the_feed(
    migrated_db: str, stream: Any, keys: Keys, live_server: LiveServer
) -> None:
    alert_id = seed_alert(migrated_db, area="CY-JW")
    reader = stream({"types": "alert"})
    response = httpx.post(
        f"{live_server.url}/api/v1/alerts/{alert_id}/ack",
        json={"comment": "on my way"},
        headers=keys.header("duty"),
    )
    assert response.status_code == 200, response.text
    acked = reader.until(lambda e: e.data["alert"]["acked_by"] is not None)
    assert acked.data["alert"]["id"] == alert_id
    assert acked.data["alert"]["acked_by"] == "test-duty"


def test_filters_by_severity_and_kind(migrated_db: str, stream: Any) -> None:
    reader = stream({"types": "alert", "severities": "critical", "kinds": "streetlight"})
    seed_alert(migrated_db, severity="info")
    wanted = seed_alert(migrated_db, severity="critical")
    assert reader.until(lambda e: True).data["alert"]["id"] == wanted


def test_reconnect_with_last_event_id_resumes(migrated_db: str, stream: Any) -> None:
    reader = stream({"types": "alert"})
    ids = [seed_alert(migrated_db, area=a) for a in ("CY-JW", "CY-CW", "CY-WJ")]
    received = [reader.next() for _ in ids]
    assert [e.data["alert"]["id"] for e in received] == ids
    event_ids = [e.id for e in received]
    assert all(i is not None for i in event_ids)
    assert event_ids == sorted(event_ids)

    # Reconnect after the first event (header, as EventSource does): the two others are
    # replayed in order, then live events follow without duplicates.
    resumed = stream({"types": "alert"}, {"Last-Event-ID": str(event_ids[0])})
    assert [resumed.next().id for _ in range(2)] == event_ids[1:]
    later = seed_alert(migrated_db, area="CY-SJ")
    nxt = resumed.next()
    assert nxt.data["alert"]["id"] == later
    assert nxt.id is not None
    assert nxt.id > event_ids[-1]
    # The query parameter works too, and a filter applies to the replay.
    again = stream({"types": "alert", "areas": "CY-WJ", "last_event_id": str(event_ids[0])})
    assert again.next().data["alert"]["id"] == ids[2]


def test_heartbeat_on_an_idle_stream(stream: Any) -> None:
    reader = stream({"types": "alert"})
    lines = reader.lines
    for line in lines:
        if line.startswith(": heartbeat"):
            break
    else:
        raise AssertionError("the stream ended without a heartbeat")


def test_readings_of_chosen_devices(migrated_db: str, stream: Any, live_server: LiveServer) -> None:
    reader = stream({"types": "reading", "devices": "HT-1"})
    # The hub marks where reading starts on its first poll; wait for that before inserting.
    live_server.wait_for_reading_poll()
    with psycopg.connect(migrated_db) as conn:
        conn.execute(
            "INSERT INTO heating_readings (device_id, ts, temperature_c, humidity_pct) "
            "VALUES ('HT-1', now(), 19.5, 41.0)"
        )
        # Another device's reading is not sent to this client.
        conn.execute(
            "INSERT INTO streetlight_readings (device_id, ts, power_state) "
            "VALUES ('SL-1', now(), 'on')"
        )
    event = reader.until(lambda e: e.type == "reading")
    assert event.data["device_id"] == "HT-1"
    assert event.data["kind"] == "heating"
    assert event.data["area"] == "CY-SJ"
    assert event.data["values"]["temperature_c"] == 19.5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"types": "alerts,bogus"}, "types"),
        ({"kinds": "lamp"}, "kinds"),
        ({"severities": "urgent"}, "severities"),
        ({"types": "reading"}, "devices"),
        ({"devices": ",".join(f"D{i}" for i in range(201))}, "devices"),
        ({"last_event_id": "abc"}, "Last-Event-ID"),
    ],
)
def test_bad_filters_are_422(
    live_server: LiveServer, keys: Keys, params: dict[str, str], field: str
) -> None:
    response = httpx.get(
        f"{live_server.url}/api/v1/live", params=params, headers=keys.header("viewer")
    )
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["detail"]["field"] == field
    assert field.split("-", maxsplit=1)[0].lower() in body["message"].lower()


def test_the_feed_needs_a_key_and_accepts_it_as_a_query_parameter(
    live_server: LiveServer, keys: Keys
) -> None:
    response = httpx.get(f"{live_server.url}/api/v1/live")
    assert response.status_code == 401
    with httpx.stream(
        "GET", f"{live_server.url}/api/v1/live", params={"api_key": keys.viewer}, timeout=WAIT_S
    ) as ok:
        assert ok.status_code == 200


def test_device_map_states(migrated_db: str, live_server: LiveServer, keys: Keys) -> None:
    seed_alert(migrated_db, area="CY-JW", device="SL-1")
    with psycopg.connect(migrated_db) as conn:
        conn.execute(
            "INSERT INTO device_state (device_id, kind, online, ts) VALUES "
            "('SL-2', 'streetlight', false, now()), ('SL-3', 'streetlight', true, now())"
        )
    response = httpx.get(f"{live_server.url}/api/v1/live/devices", headers=keys.header("viewer"))
    assert response.status_code == 200
    body = response.json()
    states = {row[0]: row[5] for row in body["devices"]}
    assert states == {
        "SL-1": "alarm",
        "SL-2": "offline",
        "SL-3": "online",
        "MH-1": "unknown",
        "CH-1": "maintenance",
        "HT-1": "unknown",
    }
    assert body["truncated"] is False
    one_area = httpx.get(
        f"{live_server.url}/api/v1/live/devices",
        params={"area": "CY-JW"},
        headers=keys.header("viewer"),
    ).json()
    assert sorted(r[0] for r in one_area["devices"]) == ["SL-1", "SL-2"]


def _insert_alert_events(dsn: str, alert_id: int, n: int, payload_bytes: int) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO alert_events (alert_id, at, event, detail) "
            "VALUES (%s, now(), 'comment', %s)",
            [(alert_id, Jsonb({"text": "x" * payload_bytes})) for _ in range(n)],
        )


def test_a_stalled_client_is_cut_off_without_blocking_others(migrated_db: str, keys: Keys) -> None:
    seed_devices(migrated_db)
    live = start_server(settings_for(migrated_db, sse_client_buffer=10, sse_heartbeat_s=30))
    stalled = socket.socket()
    try:
        alert_id = seed_alert(migrated_db)
        # A client that connects and then never reads: its kernel buffers fill, then the
        # server's, then its queue.
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", int(live.url.rsplit(":", 1)[1])))
        stalled.sendall(
            f"GET /api/v1/live?types=alert HTTP/1.1\r\nHost: test\r\n"
            f"Authorization: Bearer {keys.viewer}\r\n\r\n".encode()
        )
        deadline = time.monotonic() + WAIT_S
        while len(live.hub.clients) < 1:
            assert time.monotonic() < deadline, "the stalled client never subscribed"
            time.sleep(0.02)

        with (
            httpx.Client(base_url=live.url, timeout=WAIT_S) as client,
            client.stream(
                "GET", "/api/v1/live", params={"types": "alert"}, headers=keys.header("viewer")
            ) as response,
        ):
            reader = SseReader(response.iter_lines())
            while len(live.hub.clients) < 2:
                time.sleep(0.02)
            # Lock-step: 5 events of 64 KiB at a time, each batch read by the healthy client
            # before the next is written, until the hub cuts the stalled client off.
            received = 0
            for _ in range(400):
                _insert_alert_events(migrated_db, alert_id, 5, 64 * 1024)
                for _ in range(5):
                    event = reader.until(lambda e: e.type == "alert")
                    assert len(event.data["detail"]["text"]) == 64 * 1024
                    received += 1
                if live.hub.dropped_clients:
                    break
            assert live.hub.dropped_clients == 1
            assert len(live.hub.clients) == 1  # the healthy one
            # ... and the healthy client goes on receiving.
            _insert_alert_events(migrated_db, alert_id, 3, 10)
            for _ in range(3):
                assert reader.until(lambda e: e.type == "alert").data["detail"]["text"] == "x" * 10
            assert received >= 5
    finally:
        stalled.close()
        stop_server(live)

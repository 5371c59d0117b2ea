"""API benchmark: latest-state and rates queries under ingest load, a bare Starlette baseline, SSE.

Creates its own database on the server named by ``--dsn`` (else CITYOPS_BENCH_DSN, else
CITYOPS_TEST_DSN, else postgresql://postgres@127.0.0.1:5432/postgres) with 100,000 registered
devices (the ``city`` scenario's mix scaled to 100,000: lamps behind cabinets, covers, rooms,
connectors), a few readings per device and a week of ``rates_hourly``. Starts its own mosquitto
from deploy/mosquitto/mosquitto.conf (auth and ACLs on), the real ``cityops ingest`` (stream core
and alerts in process) and the real ``cityops api`` (``create_app``, one uvicorn process) as
subprocesses, and a bare Starlette app under the same uvicorn settings (one process, same event
loop and HTTP implementation, no access log, proxy headers on). While a separate publisher process
keeps ingest at a steady load (the cabinets' gateway batches, ``--ingest-rate`` readings/s), it
measures, one after the other:

- ``starlette_rps`` / ``starlette_p50_ms`` / ``starlette_p99_ms``: ``GET /bare`` (a constant
  JSON object) on the bare app;
- ``latest_*``: ``GET /api/v1/devices/{id}/latest`` for random registered devices, with a viewer
  API key (cityops.apikeys);
- ``rates_*``: ``GET /api/v1/rates`` alternating an area's last 24 hours (hour grain) and the
  district's last 7 days (day grain) for a random kind;
- ``sse_*``: ``sse_clients`` (500) clients on ``GET /api/v1/live?types=alert``; cover-open
  readings from registered covers fire ``cover_open`` alerts through ingest and the alert engine;
  ``sse_delay_p99_ms`` is trigger publish -> arrival of the ``firing`` event at each client (end to
  end), ``sse_fanout_spread_p99_ms`` arrival minus the first client's arrival of the same event.

Each HTTP phase is a closed loop of ``--concurrency`` keep-alive connections for a fixed time; the
client is a small HTTP/1.1 client on asyncio streams (this process, nothing else running in it),
so the load generator costs little next to the server measured. CPU seconds per process and
phase are reported (psutil). Prints one JSON object.

    .venv/bin/python benchmarks/api.py [--quick] [--dsn DSN] [--ingest-rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
# first, before this script's own folder (benchmarks/ingest.py would shadow the ingest package)
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from cityops import apikeys, registry  # noqa: E402
from cityops.db import migrate  # noqa: E402
from cityops.ports import free_port  # noqa: E402
from cityops.settings import StorageSettings  # noqa: E402
from ingest.broker import default_config_path, render_config, write_credentials  # noqa: E402

SECRET = "bench-secret"  # noqa: S105 - a throwaway broker of this run
INGEST_PW = "bench-ingest"
DEVICES = 100_000
RATE_METRICS = {
    "streetlight": ("lighting_rate", "lighting_coverage", "lit_in_daylight", "lamp_faults"),
    "heating": ("room_temp_compliance", "room_temp_coverage", "cold_episodes"),
    "charger": ("charger_availability", "charger_utilization", "charger_online"),
}
TRIGGERS_PER_S = 2.0


def admin_dsn(given: str | None) -> str:
    """The server the benchmark creates its database on."""
    return given or os.environ.get(
        "CITYOPS_BENCH_DSN",
        os.environ.get("CITYOPS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )


def with_db(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name``."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(dsn)
    parts["dbname"] = name
    return make_conninfo(**{k: v for k, v in parts.items() if v is not None})


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    """Wait until ``port`` accepts connections (or ``proc`` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port} within {timeout} s")


# --- database ---------------------------------------------------------------------------------


def create_database(admin: str) -> tuple[str, str]:
    """A new migrated database with the reference areas; returns (name, dsn)."""
    name = f"cityops_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_db(admin, name)
    with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:
        migrate.migrate(conn, StorageSettings(timescaledb="off"))
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        registry.import_areas(conn, registry.reference_area_records(), "reference")
    return name, dsn


def drop_database(admin: str, name: str) -> None:
    """Drop the benchmark's database."""
    with psycopg.connect(admin, autocommit=True) as conn:
        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(query.format(sql.Identifier(name)))


def _cell(text: str) -> Any:
    """A registry CSV cell as the JSON value the import would store (number, bool or text)."""
    if text in ("true", "false"):
        return text == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def register_devices(dsn: str, n: int, seed: int = 1) -> None:
    """The city scenario's registry scaled to ``n`` devices, copied into the empty registry.

    The rows are the scenario's own CSV rows (what ``cityops devices import`` would read), typed
    the way the import stores them and copied straight into the empty ``devices`` table: the
    import's per-row validation and staging upsert take ~30 s for 100,000 rows on this machine,
    longer than the quick run may spend on setup.
    """
    from simulators import scenario

    scn = scenario.generate(scenario.scenario_spec("city", n), seed=seed)
    base = 8  # device_id, kind, area_code, lat, lon, gateway_id, install_date, status
    names = scenario.DEVICE_COLUMNS[base:]
    with (
        psycopg.connect(dsn, options="-c TimeZone=UTC") as conn,
        conn.cursor() as cur,
        cur.copy(
            "COPY devices (device_id, kind, area_code, lat, lon, gateway_id, install_date, "
            "status, attributes) FROM STDIN"
        ) as copy,
    ):
        for rows in scenario.iter_rows(scn):
            for row in rows:
                attrs = {k: _cell(v) for k, v in zip(names, row[base:], strict=True) if v != ""}
                copy.write_row(
                    [c if c != "" else None for c in row[:base]] + [orjson.dumps(attrs).decode()]
                )


SEED_READINGS_SQL = {
    "streetlight": "INSERT INTO streetlight_readings (device_id, ts, power_state, power_w, "
    "received_at) SELECT d.device_id, %(now)s - g * interval '5 minutes', 'off', 0, "
    "%(now)s - g * interval '5 minutes' FROM devices d, generate_series(1, %(n)s) g "
    "WHERE d.kind = 'streetlight'",
    "manhole": "INSERT INTO manhole_readings (device_id, ts, tilt_deg, cover_open, battery_pct, "
    "received_at) SELECT d.device_id, %(now)s - g * interval '30 minutes', 0.5, false, 90, "
    "%(now)s - g * interval '30 minutes' FROM devices d, generate_series(1, %(n)s) g "
    "WHERE d.kind = 'manhole'",
    "heating": "INSERT INTO heating_readings (device_id, ts, temperature_c, humidity_pct, "
    "battery_pct, received_at) SELECT d.device_id, %(now)s - g * interval '20 minutes', "
    "20 + random() * 3, 40, 90, %(now)s - g * interval '20 minutes' "
    "FROM devices d, generate_series(1, %(n)s) g WHERE d.kind = 'heating'",
    "charger": "INSERT INTO charger_readings (device_id, ts, status, power_kw, received_at) "
    "SELECT d.device_id, %(now)s - g * interval '2 minutes', 'Available', 0, "
    "%(now)s - g * interval '2 minutes' FROM devices d, generate_series(1, %(n)s) g "
    "WHERE d.kind = 'charger'",
}

SEED_RATES_SQL = """
INSERT INTO rates_hourly (area_code, kind, metric, hour, numerator, denominator, samples)
SELECT a.code, %(kind)s, m.metric, h.hour, 50 + random() * 40, 100, 100
FROM areas a, unnest(%(metrics)s::text[]) AS m(metric),
     generate_series(%(first)s::timestamptz, %(last)s::timestamptz, interval '1 hour') AS h(hour)
"""


def seed_history(dsn: str, readings_per_device: int) -> int:
    """A few past readings per device (the newest a few minutes old) and a week of rates."""
    now = datetime.now(UTC).replace(microsecond=0)
    hour = now.replace(minute=0, second=0)
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        for query in SEED_READINGS_SQL.values():
            conn.execute(query, {"now": now, "n": readings_per_device})
        for kind, metrics in RATE_METRICS.items():
            conn.execute(
                SEED_RATES_SQL,
                {
                    "kind": kind,
                    "metrics": list(metrics),
                    "first": hour - timedelta(days=8),
                    "last": hour - timedelta(hours=1),
                },
            )
        (rows,) = conn.execute("SELECT count(*) FROM rates_hourly").fetchone()  # type: ignore[misc]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return int(rows)


# --- processes --------------------------------------------------------------------------------


def start_broker(workdir: Path, identities: list[str]) -> tuple[subprocess.Popen[bytes], int, int]:
    """mosquitto from the project config; returns (process, services port, device port)."""
    write_credentials(
        workdir,
        identities,
        secret=SECRET,
        service_passwords={"cityops-ingest": INGEST_PW},
    )
    port = free_port()
    device_port = free_port()
    text = render_config(
        default_config_path().read_text(encoding="utf-8"),
        port=device_port,
        service_port=port,
        data_dir=workdir,
        password_file=workdir / "passwd",
        acl_file=workdir / "acl",
        run_as="root" if os.geteuid() == 0 else None,
    )
    (workdir / "mosquitto.conf").write_text(text, encoding="utf-8")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = (workdir / "mosquitto.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - the system mosquitto, our config
        [binary, "-c", str(workdir / "mosquitto.conf")], stdout=log, stderr=log
    )
    wait_port(port, proc, "mosquitto")
    wait_port(device_port, proc, "mosquitto")
    return proc, port, device_port


def cityops_env(dsn: str, **extra: str) -> dict[str, str]:
    """The environment of a cityops process of this run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "CITYOPS_DB_DSN": dsn,
            "CITYOPS_LOG_LEVEL": "warning",
            "CITYOPS_LOG_FORMAT": "json",
        }
    )
    env.update(extra)
    return env


def start_ingest(dsn: str, port: int, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``cityops ingest`` (stream core and alerts in process); waits until it is ready."""
    http = free_port()
    env = cityops_env(
        dsn,
        CITYOPS_MQTT_HOST="127.0.0.1",
        CITYOPS_MQTT_PORT=str(port),
        CITYOPS_MQTT_USERNAME="cityops-ingest",
        CITYOPS_MQTT_PASSWORD=INGEST_PW,
        CITYOPS_MQTT_CLIENT_ID=f"bench-{uuid.uuid4().hex[:6]}",
        CITYOPS_INGEST_HTTP_PORT=str(http),
        CITYOPS_INGEST_HTTP_HOST="127.0.0.1",
    )
    log = (workdir / "ingest.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cityops", "ingest"], env=env, stdout=log, stderr=log, cwd=ROOT
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cityops ingest exited with {proc.returncode}; see {workdir}")
        if _http_status("127.0.0.1", http, "/readyz") == 200:
            return proc, http
        time.sleep(0.25)
    raise SystemExit("cityops ingest did not become ready in 180 s")


def start_api(dsn: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``cityops api`` (create_app under uvicorn, one process); see ``wait_ready``."""
    port = free_port()
    log = (workdir / "api.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603 - this interpreter, the cityops CLI
        [sys.executable, "-m", "cityops", "api", "--port", str(port)],
        env=cityops_env(dsn),
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    return proc, port


def wait_ready(proc: subprocess.Popen[bytes], port: int, what: str, timeout: float = 180) -> None:
    """Wait until ``/readyz`` on ``port`` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        if _http_status("127.0.0.1", port, "/readyz") == 200:
            return
        time.sleep(0.25)
    raise SystemExit(f"{what} did not become ready in {timeout} s")


def start_starlette(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The bare Starlette app (``--serve-starlette``) under the same uvicorn settings."""
    port = free_port()
    log = (workdir / "starlette.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603 - this script
        [sys.executable, __file__, "--serve-starlette", str(port)],
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    wait_port(port, proc, "starlette")
    return proc, port


def serve_starlette(port: int) -> None:
    """(Subprocess mode) one endpoint returning a constant JSON object, uvicorn as cityops api."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    body = {"device_id": "sl-000001", "kind": "streetlight", "online": True, "reading": None}

    async def bare(request: Request) -> JSONResponse:
        return JSONResponse(body)

    app = Starlette(routes=[Route("/bare", bare)])
    # the same arguments `cityops api` gives uvicorn.run (cityops/cli/api_cmd.py)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


def _http_status(host: str, port: int, path: str) -> int:
    """Status of one GET (0 when nothing answers)."""
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
        return int(head.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return 0


# --- the publishers (subprocesses) ---------------------------------------------------------------


def publish_load(device_port: int, rate: float, seconds: float) -> None:
    """(Subprocess mode) the cabinets' gateway batches at ``rate`` readings/s, ts = now.

    Reads ``{gateway: [lamp, ...]}`` from stdin; each gateway logs in as itself (the ACL lets it
    write only its own topic). One reading per lamp per message, gateways in turn, paced so the
    readings add up to ``rate`` per second. Prints the readings published.
    """
    from simulators.publisher import Publisher, PublisherConfig

    gateways: dict[str, list[str]] = json.loads(sys.stdin.read())
    pub = Publisher(
        PublisherConfig(
            port=device_port,
            mode="per_device",
            device_secret=SECRET,
            client_id="bench-load",
            max_pending=20_000,
        )
    )
    pub.connect(gateways=sorted(gateways))
    import signal

    from simulators.messages import Message

    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    names = sorted(gateways)
    rng = np.random.default_rng(5)
    started = time.monotonic()
    sent = 0
    k = 0
    while not stop:
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        if sent > elapsed * rate:
            pub.service_until(started + sent / rate)
            continue
        gw = names[k % len(names)]
        k += 1
        now_ms = time.time_ns() // 1_000_000
        watts = rng.normal(60.0, 0.5, len(gateways[gw]))
        body = {
            lamp: [{"ts": now_ms, "values": {"power_state": "on", "power_w": round(float(w), 1)}}]
            for lamp, w in zip(gateways[gw], watts, strict=True)
        }
        pub.publish(
            Message(
                topic=f"cityops/v1/gateway/{gw}/telemetry", payload=orjson.dumps(body), sender=gw
            )
        )
        sent += len(body)
    pub.flush(60)
    pub.close()
    print(json.dumps({"readings": sent, "seconds": round(time.monotonic() - started, 2)}))


def publish_triggers(device_port: int, per_s: float) -> None:
    """(Subprocess mode) one cover-open reading per cover from stdin, ``per_s`` a second.

    Prints ``{device: publish wall time}`` as JSON.
    """
    from cityops.catalog import Kind
    from simulators.messages import Message
    from simulators.publisher import Publisher, PublisherConfig

    covers: list[str] = json.loads(sys.stdin.read())
    pub = Publisher(
        PublisherConfig(
            port=device_port, mode="per_device", device_secret=SECRET, client_id="bench-trig"
        )
    )
    pub.connect(devices=[(Kind.MANHOLE, c) for c in covers])
    sent: dict[str, float] = {}
    started = time.monotonic()
    for i, cover in enumerate(covers):
        pub.service_until(started + i / per_s)
        now = time.time()
        body = {"ts": int(now * 1000), "values": {"cover_open": True, "tilt_deg": 0.5}}
        pub.publish(
            Message(
                topic=f"cityops/v1/manhole/{cover}/telemetry",
                payload=orjson.dumps(body),
                sender=cover,
            )
        )
        pub.service(0)
        sent[cover] = now
    pub.flush(30)
    pub.close()
    print(json.dumps(sent))


# --- the HTTP client ----------------------------------------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection (GET only; Content-Length or chunked bodies)."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        """Connect."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def request(self, path: str) -> tuple[int, dict[bytes, bytes]]:
        """Send a GET and read the status line and headers."""
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.head}\r\n".encode("ascii")
        )
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower()] = v.strip()
        return status, headers

    async def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path``; (status, body)."""
        assert self.reader is not None
        status, headers = await self.request(path)
        if b"content-length" in headers:
            body = await self.reader.readexactly(int(headers[b"content-length"]))
        else:
            parts = []
            while chunk := await self.chunk():
                parts.append(chunk)
            body = b"".join(parts)
        return status, body

    async def chunk(self) -> bytes:
        """The next chunk of a chunked body (b"" at its end)."""
        assert self.reader is not None
        size = int((await self.reader.readline()).strip().split(b";")[0], 16)
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    def close(self) -> None:
        """Close the socket."""
        if self.writer is not None:
            self.writer.close()


async def closed_loop(
    port: int,
    headers: dict[str, str],
    next_path: Any,
    *,
    concurrency: int,
    seconds: float,
    tag_of: Any = None,
) -> dict[str, Any]:
    """``concurrency`` connections, each sending its next GET as soon as the last is answered.

    ``tag_of(path)`` names a request's shape; each shape's p50/p99 is reported as well.
    """
    latencies: list[float] = []
    tags: list[str] = []
    statuses: dict[int, int] = {}
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        conn = Conn(port, headers)
        await conn.open()
        try:
            while time.perf_counter() < stop_at:
                path = next_path()
                t0 = time.perf_counter()
                status, _ = await conn.get(path)
                latencies.append(time.perf_counter() - t0)
                tags.append(tag_of(path) if tag_of else "")
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    shapes = {}
    if tag_of:
        tag_arr = np.array(tags)
        for tag in sorted(set(tags)):
            sel = lat[tag_arr == tag]
            shapes[tag] = {
                "requests": int(sel.size),
                "p50_ms": round(float(np.percentile(sel, 50)), 2),
                "p99_ms": round(float(np.percentile(sel, 99)), 2),
            }
    return {
        **({"shapes": shapes} if shapes else {}),
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def sse_phase(  # noqa: PLR0915 - one phase, start to finish
    dsn: str,
    port: int,
    key: str,
    clients: int,
    device_port: int,
    covers: list[str],
    settle_s: float,
) -> dict[str, Any]:
    """``clients`` live-feed clients; cover-open triggers; arrival of each ``firing`` event."""
    arrivals: dict[tuple[int, int], float] = {}  # (client, event_id) -> wall time
    fired_device: dict[int, str] = {}  # event_id -> device
    connected = 0
    ready = asyncio.Event()
    stop = asyncio.Event()

    async def client(i: int) -> None:
        nonlocal connected
        conn = Conn(port, {"Authorization": f"Bearer {key}"})
        await conn.open()
        status, _ = await conn.request("/api/v1/live?types=alert")
        if status != 200:
            raise RuntimeError(f"live feed answered {status}")
        connected += 1
        if connected == clients:
            ready.set()
        buf = b""
        try:
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(conn.chunk(), 0.5)
                except TimeoutError:
                    continue
                if not data:
                    break
                now = time.time()
                buf += data
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    fields = dict(
                        line.split(b": ", 1) for line in event.split(b"\n") if b": " in line
                    )
                    if fields.get(b"event") != b"alert":
                        continue
                    payload = orjson.loads(fields[b"data"])
                    if payload.get("event") != "firing" or (
                        payload["alert"].get("rule") != "cover_open"
                    ):
                        continue
                    eid = int(payload["event_id"])
                    arrivals[(i, eid)] = now
                    fired_device[eid] = payload["alert"].get("device_id") or ""
        finally:
            conn.close()

    committed: dict[str, float] = {}  # trigger device -> when its firing event was visible

    async def watch_commits() -> None:
        # the firing events as they become visible in the database (polled every 20 ms): splits
        # the delay into publish -> alert committed and committed -> client
        after = 0
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                cur = await conn.execute(
                    "SELECT e.id, a.device_id FROM alert_events e JOIN alerts a "
                    "ON a.id = e.alert_id WHERE e.id > %s AND e.event = 'firing' "
                    "AND a.rule = 'cover_open' ORDER BY e.id",
                    (after,),
                )
                now = time.time()
                for eid, device in await cur.fetchall():
                    after = max(after, int(eid))
                    committed.setdefault(str(device), now)
                await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.wait_for(ready.wait(), 120)
    watcher = asyncio.create_task(watch_commits())
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--publish-triggers",
        str(device_port),
        str(TRIGGERS_PER_S),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate(json.dumps(covers).encode())
    sent: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    # wait for the last alerts to reach every client (bounded)
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        got = {d for (_, e), _t in arrivals.items() if (d := fired_device.get(e)) in sent}
        if len(got) >= len(sent):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks, watcher, return_exceptions=True)
    first: dict[int, float] = {}
    for (_, eid), t in arrivals.items():
        first[eid] = min(first.get(eid, t), t)
    delays = [
        (t - sent[fired_device[eid]]) * 1000
        for (_, eid), t in arrivals.items()
        if fired_device.get(eid) in sent
    ]
    spread = [(t - first[eid]) * 1000 for (_, eid), t in arrivals.items()]
    to_commit = [(committed[d] - sent[d]) * 1000 for d in sent if d in committed]
    commit_to_client = [
        (t - committed[fired_device[eid]]) * 1000
        for (_, eid), t in arrivals.items()
        if fired_device.get(eid) in committed
    ]
    trigger_events = {e for e, d in fired_device.items() if d in sent}
    expected = len(sent) * clients
    got_n = sum(1 for (_, e) in arrivals if e in trigger_events)
    d = np.array(delays) if delays else np.array([np.nan])
    s = np.array(spread) if spread else np.array([np.nan])
    return {
        "sse_clients": clients,
        "sse_triggers": len(sent),
        "sse_deliveries": got_n,
        "sse_deliveries_expected": expected,
        "sse_delay_p50_ms": round(float(np.percentile(d, 50)), 1),
        "sse_delay_p99_ms": round(float(np.percentile(d, 99)), 1),
        "sse_delay_max_ms": round(float(np.max(d)), 1),
        "sse_fanout_spread_p99_ms": round(float(np.percentile(s, 99)), 1),
        **_pcts("sse_publish_to_alert_committed", to_commit),
        **_pcts("sse_alert_committed_to_client", commit_to_client),
    }


def _pcts(name: str, values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"{name}_p50_ms": None, f"{name}_p99_ms": None}
    a = np.array(values)
    return {
        f"{name}_p50_ms": round(float(np.percentile(a, 50)), 1),
        f"{name}_p99_ms": round(float(np.percentile(a, 99)), 1),
    }


# --- main -----------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds of named processes between two marks (psutil)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.mark = self._now()
        self.t = time.monotonic()

    def _now(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            try:
                cpu = p.cpu_times()
                out[name] = cpu.user + cpu.system
            except psutil.Error:
                out[name] = 0.0
        return out

    def take(self) -> dict[str, float]:
        """Cores used per process since the last call."""
        now, t = self._now(), time.monotonic()
        dt = max(t - self.t, 1e-6)
        used = {k: round((now[k] - self.mark.get(k, 0.0)) / dt, 2) for k in now}
        self.mark, self.t = now, t
        return used


class PgMeter:
    """CPU of every PostgreSQL server process, backends started between two marks included."""

    def __init__(self) -> None:
        self.mark = self._now()
        self.t = time.monotonic()

    @staticmethod
    def _now() -> dict[int, float]:
        out = {}
        for p in psutil.process_iter(["name", "cpu_times"]):
            if p.info["name"] == "postgres" and p.info["cpu_times"] is not None:
                out[p.pid] = p.info["cpu_times"].user + p.info["cpu_times"].system
        return out

    def take(self) -> float:
        """Cores used by PostgreSQL since the last call."""
        now, t = self._now(), time.monotonic()
        used = sum(cpu - self.mark.get(pid, 0.0) for pid, cpu in now.items())
        used = used / max(t - self.t, 1e-6)
        self.mark, self.t = now, t
        return round(used, 2)


def note(started: float, what: str) -> None:
    """Progress on stderr (stdout carries only the JSON)."""
    print(f"[{time.monotonic() - started:6.1f} s] {what}", file=sys.stderr, flush=True)


def main() -> None:  # noqa: PLR0912, PLR0915 - one linear script
    """Run every phase and print the JSON result."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases, under two minutes")
    parser.add_argument("--dsn", default=None, help="server to create the benchmark database on")
    parser.add_argument("--devices", type=int, default=DEVICES)
    parser.add_argument(
        "--ingest-rate", type=float, default=2000.0, help="readings/s of the steady ingest load"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="connections per HTTP phase")
    parser.add_argument("--sse-clients", type=int, default=500)
    parser.add_argument("--keep", action="store_true", help="keep the database and logs")
    parser.add_argument("--serve-starlette", type=int, metavar="PORT")
    parser.add_argument("--publish-load", nargs=3, metavar=("PORT", "RATE", "SECONDS"))
    parser.add_argument("--publish-triggers", nargs=2, metavar=("PORT", "PER_S"))
    args = parser.parse_args()
    if args.serve_starlette:
        serve_starlette(args.serve_starlette)
        return
    if args.publish_load:
        port, rate, secs = args.publish_load
        publish_load(int(port), float(rate), float(secs))
        return
    if args.publish_triggers:
        port, per_s = args.publish_triggers
        publish_triggers(int(port), float(per_s))
        return
    from cityops import logging as cityops_logging
    from cityops.settings import LogSettings

    cityops_logging.configure(LogSettings(level="warning"))
    phase_s = float(os.environ.get("BENCH_PHASE_S", "6" if args.quick else "30"))
    n_triggers = 12 if args.quick else 60
    readings_per_device = 2 if args.quick else 12
    started = time.monotonic()
    load_before = os.getloadavg()
    admin = admin_dsn(args.dsn)
    name, dsn = create_database(admin)
    workdir = Path(tempfile.mkdtemp(prefix="cityops-bench-api-"))
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {"quick": args.quick}
    ok = False
    try:
        t0 = time.monotonic()
        register_devices(dsn, args.devices)
        note(started, "registered")
        rates_rows = seed_history(dsn, readings_per_device)
        note(started, "seeded")
        with psycopg.connect(dsn) as conn:
            _, key = apikeys.create_key(conn, "bench", apikeys.Role.VIEWER)
            devices = [r[0] for r in conn.execute("SELECT device_id FROM devices")]
            areas = [r[0] for r in conn.execute("SELECT code FROM areas ORDER BY code")]
            gateways: dict[str, list[str]] = {}
            for dev, gw in conn.execute(
                "SELECT device_id, gateway_id FROM devices WHERE gateway_id IS NOT NULL"
            ):
                gateways.setdefault(gw, []).append(dev)
            covers = [
                r[0]
                for r in conn.execute(
                    "SELECT device_id FROM devices WHERE kind = 'manhole' AND gateway_id IS NULL "
                    "ORDER BY device_id LIMIT %s",
                    (n_triggers,),
                )
            ]
        setup_s = time.monotonic() - t0
        broker, port, device_port = start_broker(workdir, [*gateways, *covers])
        procs.append(broker)
        note(started, "broker up")
        api, api_port = start_api(dsn, workdir)  # starts while ingest loads its registry
        procs.append(api)
        bare, bare_port = start_starlette(workdir)
        procs.append(bare)
        ingest, _ = start_ingest(dsn, port, workdir)
        procs.append(ingest)
        note(started, "ingest ready")
        wait_ready(api, api_port, "cityops api")
        note(started, "api ready")
        total_s = 4 * phase_s + 60 + n_triggers / TRIGGERS_PER_S
        loader = subprocess.Popen(  # noqa: S603 - this script
            [
                sys.executable,
                __file__,
                "--publish-load",
                str(device_port),
                str(args.ingest_rate),
                str(total_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        procs.append(loader)  # type: ignore[arg-type]
        assert loader.stdin is not None
        loader.stdin.write(json.dumps(gateways).encode())
        loader.stdin.close()
        loader.stdin = None  # communicate() must not flush it again
        time.sleep(3.0)  # the load reaches ingest before the clock starts
        pids = {
            "api": api.pid,
            "starlette": bare.pid,
            "ingest": ingest.pid,
            "mosquitto": broker.pid,
            "load_publisher": loader.pid,
            "bench_client": os.getpid(),
        }
        meter = CpuMeter(pids)
        pg_meter = PgMeter()
        rng = random.Random(3)
        auth = {"Authorization": f"Bearer {key}"}
        cpu: dict[str, Any] = {}

        def latest_path() -> str:
            return f"/api/v1/devices/{rng.choice(devices)}/latest"

        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

        def rates_path() -> str:
            kind = rng.choice(list(RATE_METRICS))
            if rng.random() < 0.5:
                q = {
                    "kind": kind,
                    "start": (now - timedelta(hours=24)).isoformat().replace("+00:00", "Z"),
                    "end": now.isoformat().replace("+00:00", "Z"),
                    "grain": "hour",
                    "level": "area",
                    "area_code": rng.choice(areas),
                }
            else:
                q = {
                    "kind": kind,
                    "start": (now - timedelta(days=7)).isoformat().replace("+00:00", "Z"),
                    "end": now.isoformat().replace("+00:00", "Z"),
                    "grain": "day",
                    "level": "district",
                }
            return "/api/v1/rates?" + urlencode(q)

        async def http_phases() -> dict[str, dict[str, Any]]:
            out = {}
            # warm-up: first requests open pool connections and fill caches
            await closed_loop(api_port, auth, latest_path, concurrency=args.concurrency, seconds=1)
            await closed_loop(api_port, auth, rates_path, concurrency=args.concurrency, seconds=1)
            await closed_loop(bare_port, {}, lambda: "/bare", concurrency=2, seconds=1)
            meter.take()
            pg_meter.take()

            def rates_shape(path: str) -> str:
                return "district_7d_by_day" if "level=district" in path else "area_24h_by_hour"

            for phase, port_, headers, path, tag_of in (
                ("starlette", bare_port, {}, lambda: "/bare", None),
                ("latest", api_port, auth, latest_path, None),
                ("rates", api_port, auth, rates_path, rates_shape),
            ):
                out[phase] = await closed_loop(
                    port_,
                    headers,
                    path,
                    concurrency=args.concurrency,
                    seconds=phase_s,
                    tag_of=tag_of,
                )
                cpu[phase] = meter.take() | {"postgres": pg_meter.take()}
            return out

        note(started, "load running")
        http = asyncio.run(http_phases())
        note(started, "http phases done")
        sse = asyncio.run(
            sse_phase(dsn, api_port, key, args.sse_clients, device_port, covers, settle_s=30)
        )
        note(started, "sse done")
        cpu["sse"] = meter.take() | {"postgres": pg_meter.take()}
        loader.terminate()
        loaded = json.loads(loader.communicate(timeout=60)[0].decode().strip().splitlines()[-1])
        stored = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the last published readings are still committing
            with psycopg.connect(dsn) as conn:
                (stored,) = conn.execute(  # type: ignore[misc]
                    "SELECT count(*) FROM streetlight_readings WHERE power_state = 'on'"
                ).fetchone()
            if stored >= loaded["readings"]:
                break
            time.sleep(1)
        result.update(
            {
                "latest_p50_ms": http["latest"]["p50_ms"],
                "latest_p99_ms": http["latest"]["p99_ms"],
                "latest_rps": http["latest"]["rps"],
                "rates_p50_ms": http["rates"]["p50_ms"],
                "rates_p99_ms": http["rates"]["p99_ms"],
                "rates_rps": http["rates"]["rps"],
                "starlette_rps": http["starlette"]["rps"],
                "starlette_p50_ms": http["starlette"]["p50_ms"],
                "starlette_p99_ms": http["starlette"]["p99_ms"],
                **sse,
                "phases": http,
                "cpu_cores": cpu,
                "ingest_load_readings_per_s": args.ingest_rate,
                "ingest_load_readings_published": loaded["readings"],
                "ingest_load_achieved_per_s": round(loaded["readings"] / loaded["seconds"]),
                "ingest_load_readings_stored": int(stored),
                "devices": args.devices,
                "rates_hourly_rows": rates_rows,
                "concurrency": args.concurrency,
                "phase_s": phase_s,
                "setup_s": round(setup_s, 1),
                "total_s": round(time.monotonic() - started, 1),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            }
        )
        print(json.dumps(result))
        ok = True
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"kept database {name} and {workdir}", file=sys.stderr)
        else:
            drop_database(admin, name)
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Soak: the real processes at a district's and a city's rates, then faster until something gives.

For each scenario the soak creates its own database (``--dsn``, else CITYOPS_BENCH_DSN, else
CITYOPS_TEST_DSN, else postgresql://postgres@127.0.0.1:5432/postgres), registers the scenario's
devices (``district``: 48,000; ``city``: 1,000,000, both from simulators/scenario.py), and starts
mosquitto from deploy/mosquitto/mosquitto.conf, the real ``cityops ingest`` (stream core and
alerts in process) and the real ``cityops api``. A publisher process runs the simulator
(simulators/engine.py, the scenario's own stream) and publishes its messages at ``speed`` times
real time, spread evenly over each tick. It publishes under one service login that the soak adds
to the generated ACL (``cityops-soak``: write on telemetry and status), instead of one login per
device: 48,000 or 1,000,000 device connections from one Python process would measure the
publisher. Topics, payloads and the ingest path are the devices' own.

Phases: ``district`` at real time, then at ``--speeds`` (default 10, 30, 60, 120) times real
time until a phase gives (stored falls behind offered, or the publish -> commit lag p99 passes
1 s), then ``city`` at real time (unless ``--skip-city``). Each phase lasts ``--minutes``.

Measured per phase (JSON on stdout):

- ``offered_readings_per_s`` / ``stored_readings_per_s``: the publisher's readings and the rows
  the readings tables gained (``pg_stat_user_tables``);
- ``commit_lag_p50_ms`` / ``commit_lag_p99_ms``: a probe room sensor publishes every 200 ms with
  ``ts`` = publish time; its newest row is polled every 20 ms (publish -> visible in the database);
- ``alert_lag_p50_ms`` / ``alert_lag_p99_ms``: a probe cover opens every 4 s (and closes 2 s
  later); publish -> its ``firing`` alert event visible in the database (polled every 20 ms):
  ingest, the stream core and the alert engine (``stream_alert_stage_p50_ms`` is that minus the
  commit lag); ``alert_notice_lag_*``: publish -> the notification on ``cityops/v1/alerts/#``
  (the notifier groups repeated alerts, so there are few samples);
- ``commit_lag_max_ms_per_20s``: the largest probe lag in each 20 s of the phase (stalls);
- ``cpu_cores`` and ``rss_mb`` (start, end) per process (psutil), PostgreSQL summed;
- ``db_growth_mb_per_hour``: ``pg_database_size`` over the phase, per hour;
- ``api_latest_p99_ms``: ``GET /api/v1/devices/{id}/latest`` from two connections during the
  phase;
- ``first_bottleneck``: the first phase that gave, with the evidence.

    .venv/bin/python benchmarks/soak.py --minutes 5 [--speeds 10,30] [--skip-city]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# first, before this script's own folder (benchmarks/ingest.py would shadow the ingest package)
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
import psycopg  # noqa: E402

from benchmarks.api import (  # noqa: E402
    INGEST_PW,
    Conn,
    PgMeter,
    _cell,
    cityops_env,
    create_database,
    drop_database,
    start_api,
    wait_port,
    wait_ready,
)
from cityops.ports import free_port  # noqa: E402
from ingest.broker import (  # noqa: E402
    default_config_path,
    password_hash,
    render_config,
    write_credentials,
)

SECRET = "soak-secret"  # noqa: S105 - a throwaway broker of this run
SOAK_USER = "cityops-soak"
SOAK_PW = "soak-pw"
API_PW = "soak-api"
PROBE_ROOM = "ht-soak-probe"
PROBE_COVER = "mh-soak-probe"
READINGS_TABLES = (
    "streetlight_readings",
    "manhole_readings",
    "heating_readings",
    "charger_readings",
)
LAG_AIM_MS = 1000.0


# The soak publisher's bound on messages published and not yet acknowledged.
MAX_UNACKED = 20_000


def admin_dsn(given: str | None) -> str:
    """The server the soak creates its databases on."""
    return given or os.environ.get(
        "CITYOPS_BENCH_DSN",
        os.environ.get("CITYOPS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )


def register(dsn: str, scenario_name: str, seed: int) -> int:
    """The scenario's registry copied into the empty database, plus the two probe devices."""
    from simulators import scenario

    scn = scenario.generate(scenario.scenario_spec(scenario_name), seed=seed)
    base = 8
    names = scenario.DEVICE_COLUMNS[base:]
    n = 0
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY devices (device_id, kind, area_code, lat, lon, gateway_id, install_date, "
                "status, attributes) FROM STDIN"
            ) as copy,
        ):
            for rows in scenario.iter_rows(scn):
                for row in rows:
                    attrs = {k: _cell(v) for k, v in zip(names, row[base:], strict=True) if v}
                    copy.write_row(
                        [c if c != "" else None for c in row[:base]]
                        + [orjson.dumps(attrs).decode()]
                    )
                    n += 1
        (area,) = conn.execute("SELECT min(code) FROM areas").fetchone()  # type: ignore[misc]
        conn.execute(
            "INSERT INTO devices (device_id, kind, area_code, attributes) VALUES "
            "(%s, 'heating', %s, '{\"heated_area_m2\": 80}'), (%s, 'manhole', %s, '{}')",
            (PROBE_ROOM, area, PROBE_COVER, area),
        )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE devices")
    return n


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """mosquitto from the project config; the soak's publisher login added to the ACL."""
    write_credentials(
        workdir,
        [],
        secret=SECRET,
        service_passwords={"cityops-ingest": INGEST_PW, "cityops-api": API_PW},
    )
    # the load generator: one service login on the services listener that may write what the
    # devices write (the generated ACL otherwise lets each device write only its own topics)
    with (workdir / "passwd-services").open("a", encoding="utf-8") as f:
        f.write(f"{SOAK_USER}:{password_hash(SOAK_PW)}\n")
    with (workdir / "acl").open("a", encoding="utf-8") as f:
        f.write(
            f"\n# soak load generator (benchmarks/soak.py)\nuser {SOAK_USER}\n"
            "topic write cityops/v1/+/+/telemetry\ntopic write cityops/v1/+/+/status\n"
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
    return proc, port


def start_ingest(dsn: str, port: int, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``cityops ingest`` with the stream core and alerts in process."""
    http = free_port()
    env = cityops_env(
        dsn,
        CITYOPS_MQTT_HOST="127.0.0.1",
        CITYOPS_MQTT_PORT=str(port),
        CITYOPS_MQTT_USERNAME="cityops-ingest",
        CITYOPS_MQTT_PASSWORD=INGEST_PW,
        CITYOPS_MQTT_CLIENT_ID=f"soak-{uuid.uuid4().hex[:6]}",
        CITYOPS_INGEST_HTTP_PORT=str(http),
        CITYOPS_INGEST_HTTP_HOST="127.0.0.1",
    )
    log = (workdir / "ingest.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cityops", "ingest"], env=env, stdout=log, stderr=log, cwd=ROOT
    )
    return proc, http


# --- the publisher (subprocess) ----------------------------------------------------------------


def publish(  # noqa: PLR0912, PLR0915 - one publishing loop
    port: int, scenario_name: str, speed: float, seconds: float, seed: int, births: bool
) -> None:
    """(Subprocess mode) the scenario's simulated stream at ``speed`` x real time.

    Simulated time starts now (whole minute); each tick's messages are spread evenly over the
    tick's wall time. Every 5 s a progress line ``{"t", "messages", "readings", "behind_s"}``
    goes to stdout; a probe room reading every 200 ms (ts = publish time) and a probe cover
    opening every 4 s, closing 2 s later, are published alongside (``{"probe": ...}`` lines).
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from simulators import scenario
    from simulators.engine import Simulation
    from simulators.messages import encode

    scn = scenario.generate(scenario.scenario_spec(scenario_name), seed=seed)
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    sim = Simulation(
        scn,
        start=start,
        duration=timedelta(seconds=seconds * speed + 120),
        fault_rate=0.02,
        births=births,
    )
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-pub-{uuid.uuid4().hex[:6]}")
    client.username_pw_set(SOAK_USER, SOAK_PW)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    acked = [0]

    def on_publish(*_: object) -> None:
        acked[0] += 1

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    while not client.is_connected():
        time.sleep(0.01)
    out = sys.stdout
    t0 = time.monotonic()
    messages = readings = statuses = 0
    probes_sent = [0]
    next_report = t0 + 5
    next_probe = t0
    next_cover = t0 + 1
    cover_open = False
    tick_wall = 60.0 / speed
    done = False
    for k, tick in enumerate(sim.ticks()):
        if done or time.monotonic() - t0 >= seconds:
            break
        batch = list(encode(tick))
        n = max(1, len(batch))
        tick_start = t0 + k * tick_wall
        for i, m in enumerate(batch):
            if i % 1000 == 0 and time.monotonic() - t0 >= seconds:
                done = True  # the phase is over, even in a tick too big to publish in time
                break
            due = tick_start + i * tick_wall / n
            while True:
                now = time.monotonic()
                if now >= next_probe:
                    ts = time.time_ns() // 1_000_000
                    body = b'{"ts":%d,"values":{"temperature_c":20.5}}' % ts
                    client.publish(f"cityops/v1/heating/{PROBE_ROOM}/telemetry", body, qos=1)
                    probes_sent[0] += 1
                    next_probe += 0.2
                if now >= next_cover:
                    ts = time.time_ns() // 1_000_000
                    cover_open = not cover_open
                    value = b"true" if cover_open else b"false"
                    body = b'{"ts":%d,"values":{"cover_open":%s,"tilt_deg":0.5}}' % (ts, value)
                    client.publish(f"cityops/v1/manhole/{PROBE_COVER}/telemetry", body, qos=1)
                    probes_sent[0] += 1
                    if cover_open:
                        out.write(json.dumps({"probe": "cover", "ts": ts}) + "\n")
                        out.flush()
                    next_cover += 2.0
                if now >= due:
                    break
                time.sleep(max(0.0, min(due, next_probe, next_cover) - now))
            # At most MAX_UNACKED published and not acknowledged: without a bound, a publisher
            # that is behind (the city's first minute, ~1,000,000 first readings) publishes
            # in a loop that leaves paho's network thread no turn to read the acks, until the
            # 16-bit message ids wrap (publish fails with MQTT_ERR_QUEUE_SIZE, 15).
            while messages + probes_sent[0] - acked[0] > MAX_UNACKED:
                time.sleep(0.002)
            info = client.publish(m.topic, m.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise SystemExit(f"publish failed: {info.rc}")
            messages += 1
            readings += _readings_in(m.topic, m.payload)
            statuses += m.topic.endswith("/status")
            if now >= next_report:
                out.write(
                    json.dumps(
                        {
                            "t": round(now - t0, 2),
                            "messages": messages,
                            "readings": readings,
                            "statuses": statuses,
                            "behind_s": round(max(0.0, now - due), 2),
                        }
                    )
                    + "\n"
                )
                out.flush()
                next_report += 5
    now = time.monotonic()
    end = {"t": round(now - t0, 2), "messages": messages, "readings": readings}
    out.write(json.dumps(end | {"statuses": statuses}))
    out.write("\n")
    out.flush()
    client.loop_stop()
    client.disconnect()


def _readings_in(topic: str, payload: bytes) -> int:
    if not topic.endswith("/telemetry"):
        return 0
    if "/gateway/" in topic:
        return sum(len(v) for v in orjson.loads(payload).values())
    return 1


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Probes:
    """Commit lag (probe room polled in the database) and alert lag (probe cover on MQTT)."""

    dsn: str
    port: int
    commit_lags: list[float] = field(default_factory=list)
    commit_series: list[tuple[float, float]] = field(default_factory=list)  # (ts ms, lag ms)
    alert_lags: list[float] = field(default_factory=list)
    alert_db_lags: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run_commit(self) -> None:
        """Poll the probe room's newest row every 20 ms; lag = seen - its ts."""
        last = 0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT (extract(epoch FROM ts) * 1000)::bigint FROM heating_readings "
                    "WHERE device_id = %s AND ts > to_timestamp(%s / 1000.0) ORDER BY ts",
                    (PROBE_ROOM, last),
                ).fetchall()
                now = time.time() * 1000
                for (ts,) in rows:
                    self.commit_lags.append(now - ts)
                    self.commit_series.append((float(ts), now - ts))
                    last = max(last, int(ts))
                time.sleep(0.02)

    def run_alert_db(self) -> None:
        """Poll the probe cover's firing events; lag = visible - the opening reading's ts.

        The alert engine stamps a state alert's event with the reading's time, so the event's
        ``at`` is the probe's publish time (the notifier's grouping does not enter here).
        """
        after = 0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT e.id, (extract(epoch FROM e.at) * 1000)::bigint FROM alert_events e "
                    "JOIN alerts a ON a.id = e.alert_id WHERE e.id > %s AND e.event = 'firing' "
                    "AND a.device_id = %s ORDER BY e.id",
                    (after, PROBE_COVER),
                ).fetchall()
                now = time.time() * 1000
                for eid, at in rows:
                    after = max(after, int(eid))
                    self.alert_db_lags.append(now - at)
                time.sleep(0.02)

    def run_alerts(self, opened: dict[int, float]) -> Any:
        """Subscribe to alert notifications; lag = arrival - the cover's publish ts."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        def on_message(_c: Any, _u: Any, m: Any) -> None:
            now = time.time() * 1000
            body = orjson.loads(m.payload)
            for a in body.get("alerts", []):
                labels = a.get("labels") or {}
                if labels.get("device_id") == PROBE_COVER and a.get("state") == "firing":
                    # the newest opening before now
                    cands = [ts for ts in opened if ts <= now]
                    if cands:
                        ts = max(cands)
                        if opened[ts] == 0:
                            opened[ts] = now
                            self.alert_lags.append(now - ts)

        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-sub-{uuid.uuid4().hex[:6]}")
        c.username_pw_set("cityops-api", API_PW)
        c.on_message = on_message
        c.connect("127.0.0.1", self.port)
        c.subscribe("cityops/v1/alerts/#", qos=1)
        c.loop_start()
        return c


def api_probe(port: int, key: str, devices: list[str], stop: threading.Event) -> list[float]:
    """Two keep-alive connections asking for random devices' latest state until ``stop``."""
    lat: list[float] = []
    rng = random.Random(1)

    async def worker() -> None:
        conn = Conn(port, {"Authorization": f"Bearer {key}"})
        await conn.open()
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                await conn.get(f"/api/v1/devices/{rng.choice(devices)}/latest")
                lat.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.05)
        finally:
            conn.close()

    async def main() -> None:
        await asyncio.gather(worker(), worker())

    asyncio.run(main())
    return lat


def _windows(series: list[tuple[float, float]], width_ms: float) -> list[float]:
    """The largest lag in each ``width_ms`` window of publish time (stalls show as spikes)."""
    if not series:
        return []
    t0 = series[0][0]
    out: dict[int, float] = {}
    for ts, lag in series:
        k = int((ts - t0) // width_ms)
        out[k] = max(out.get(k, 0.0), lag)
    return [round(out.get(k, 0.0)) for k in range(max(out) + 1)]


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.array(values), q)), 1) if values else None


class Sampler:
    """CPU and RSS of the stack's processes, sampled every few seconds."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.pg = PgMeter()
        self.cpu0 = self._cpu()
        self.t0 = time.monotonic()
        self.rss: dict[str, list[float]] = {name: [] for name in self.procs}
        self.rss["postgres"] = []

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            try:
                c = p.cpu_times()
                out[name] = c.user + c.system
            except psutil.Error:
                out[name] = 0.0
        return out

    def sample(self) -> None:
        """Record the RSS of every process now."""
        for name, p in self.procs.items():
            with contextlib.suppress(psutil.Error):
                self.rss[name].append(p.memory_info().rss / 1e6)
        pg = [
            p.info["memory_info"].rss
            for p in psutil.process_iter(["name", "memory_info"])
            if p.info["name"] == "postgres" and p.info["memory_info"] is not None
        ]
        self.rss["postgres"].append(sum(pg) / 1e6)

    def result(self) -> dict[str, Any]:
        """Cores per process over the phase and RSS at its start and end."""
        dt = time.monotonic() - self.t0
        cpu = self._cpu()
        cores = {k: round((cpu[k] - self.cpu0[k]) / dt, 2) for k in cpu}
        cores["postgres"] = self.pg.take()
        rss = {k: [round(v[0]), round(v[-1])] for k, v in self.rss.items() if v}
        return {"cpu_cores": cores, "rss_mb_start_end": rss}


def stored_rows(dsn: str) -> int:
    """Rows inserted into the readings tables so far (statistics collector, cheap)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        (n,) = conn.execute(  # type: ignore[misc]
            "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables "
            "WHERE relname LIKE ANY(%s)",
            ([f"{t}%" for t in READINGS_TABLES],),
        ).fetchone()
    return int(n)


def db_size(dsn: str) -> int:
    """Bytes of the database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        (n,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()  # type: ignore[misc]
    return int(n)


def run_phase(
    stack: dict[str, Any],
    scenario_name: str,
    speed: float,
    minutes: float,
    seed: int,
    *,
    births: bool = False,
) -> dict[str, Any]:
    """One phase: the publisher at ``speed`` for ``minutes``; everything measured meanwhile."""
    dsn, port = stack["dsn"], stack["port"]
    seconds = minutes * 60
    opened: dict[int, float] = {}
    probes = Probes(dsn, port)
    sub = probes.run_alerts(opened)
    threads = [
        threading.Thread(target=probes.run_commit, daemon=True),
        threading.Thread(target=probes.run_alert_db, daemon=True),
    ]
    api_stop = threading.Event()
    api_lat: list[float] = []
    threads.append(
        threading.Thread(
            target=lambda: api_lat.extend(
                api_probe(stack["api_port"], stack["key"], stack["devices"], api_stop)
            ),
            daemon=True,
        )
    )
    for t in threads:
        t.start()
    pub = subprocess.Popen(  # noqa: S603 - this script
        [
            sys.executable,
            __file__,
            "--publish",
            str(port),
            scenario_name,
            str(speed),
            str(seconds),
            str(seed),
            str(int(births)),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    sampler = Sampler(
        {
            "ingest": stack["ingest"].pid,
            "api": stack["api"].pid,
            "mosquitto": stack["broker"].pid,
            "publisher": pub.pid,
        }
    )
    stored0, size0, t0 = stored_rows(dsn), db_size(dsn), time.monotonic()
    progress: list[dict[str, Any]] = []
    assert pub.stdout is not None
    last_sample = 0.0
    for line in pub.stdout:
        rec = json.loads(line)
        if rec.get("probe") == "cover":
            opened[int(rec["ts"])] = 0
        else:
            progress.append(rec)
        if time.monotonic() - last_sample >= 5:
            sampler.sample()
            last_sample = time.monotonic()
    pub.wait()
    elapsed = time.monotonic() - t0
    stored1, size1 = stored_rows(dsn), db_size(dsn)
    # what ingest still had to write when the publisher stopped
    time.sleep(3)
    stored_after = stored_rows(dsn)
    sampler.sample()
    usage = sampler.result()
    probes.stop.set()
    api_stop.set()
    for t in threads:
        t.join(10)
    sub.loop_stop()
    sub.disconnect()
    offered = progress[-1]["readings"] if progress else 0
    probe_readings = int(seconds / 0.2) + int(seconds / 2)
    stored = stored1 - stored0 - min(probe_readings, stored1 - stored0)
    result = {
        "scenario": scenario_name,
        "speed": speed,
        "births": births,
        "statuses_published": progress[-1].get("statuses", 0) if progress else 0,
        "seconds": round(elapsed, 1),
        "offered_readings_per_s": round(offered / elapsed, 1),
        "stored_readings_per_s": round(stored / elapsed, 1),
        "stored_after_stop_3s": stored_after - stored1,
        "publisher_behind_s_max": max((p.get("behind_s", 0) for p in progress), default=0),
        "commit_lag_p50_ms": _pct(probes.commit_lags, 50),
        "commit_lag_p99_ms": _pct(probes.commit_lags, 99),
        "commit_lag_samples": len(probes.commit_lags),
        "commit_lag_max_ms_per_20s": _windows(probes.commit_series, 20_000),
        "alert_lag_p50_ms": _pct(probes.alert_db_lags, 50),
        "alert_lag_p99_ms": _pct(probes.alert_db_lags, 99),
        "alert_lag_samples": len(probes.alert_db_lags),
        "alert_notice_lag_p50_ms": _pct(probes.alert_lags, 50),
        "alert_notice_lag_p99_ms": _pct(probes.alert_lags, 99),
        "alert_notice_samples": len(probes.alert_lags),
        "alerts_opened": len(opened),
        "api_latest_p50_ms": _pct(api_lat, 50),
        "api_latest_p99_ms": _pct(api_lat, 99),
        "api_requests": len(api_lat),
        "db_growth_mb_per_hour": round((size1 - size0) / 1e6 / elapsed * 3600, 1),
        "db_size_mb_end": round(size1 / 1e6, 1),
        **usage,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    if result["commit_lag_p50_ms"] is not None and result["alert_lag_p50_ms"] is not None:
        result["stream_alert_stage_p50_ms"] = round(
            result["alert_lag_p50_ms"] - result["commit_lag_p50_ms"], 1
        )
    return result


def gave(phase: dict[str, Any]) -> str | None:
    """Why a phase counts as the point where something gave (None if it held)."""
    if phase["offered_readings_per_s"] and (
        phase["stored_readings_per_s"] < 0.95 * phase["offered_readings_per_s"]
    ):
        return "stored fell behind offered"
    if (phase["commit_lag_p99_ms"] or 0) > LAG_AIM_MS:
        return f"publish -> commit lag p99 above {LAG_AIM_MS:g} ms"
    if phase["publisher_behind_s_max"] > 10:
        return "the publisher could not keep the rate"
    if phase["commit_lag_samples"] == 0:
        return "no probe reading was committed"
    return None


def bottleneck(phase: dict[str, Any], why: str) -> dict[str, Any]:
    """The busiest process of a phase that gave (a Python process is bound by one core)."""
    cores = phase["cpu_cores"]
    limits = {"ingest": 1.0, "api": 1.0, "publisher": 1.0, "mosquitto": 1.0, "postgres": 2.0}
    share = {k: round(v / limits.get(k, 1.0), 2) for k, v in cores.items()}
    busiest = max(share, key=lambda k: share[k])
    return {
        "phase": f"{phase['scenario']} x{phase['speed']:g}"
        + (" (births)" if phase["births"] else ""),
        "why": why,
        "busiest_process": busiest,
        "share_of_its_limit": share,
        "machine_cpu_cores_used": round(sum(cores.values()), 2),
        "evidence": {
            k: phase[k]
            for k in (
                "offered_readings_per_s",
                "stored_readings_per_s",
                "commit_lag_p99_ms",
                "alert_lag_p99_ms",
                "publisher_behind_s_max",
                "cpu_cores",
            )
        },
    }


def start_stack(
    admin: str, scenario_name: str, seed: int, workdir: Path, start_timeout: float
) -> dict[str, Any]:
    """Database, registry, broker, ingest and API for one scenario."""
    from cityops import apikeys

    t0 = time.monotonic()
    name, dsn = create_database(admin)
    stack: dict[str, Any] = {"db_name": name, "dsn": dsn, "procs": []}
    stack["devices_registered"] = register(dsn, scenario_name, seed)
    with psycopg.connect(dsn) as conn:
        _, stack["key"] = apikeys.create_key(conn, "soak", apikeys.Role.VIEWER)
        stack["devices"] = [
            r[0] for r in conn.execute("SELECT device_id FROM devices TABLESAMPLE SYSTEM (5)")
        ][:5000]
    stack["registry_s"] = round(time.monotonic() - t0, 1)
    broker, port = start_broker(workdir)
    stack["procs"].append(broker)
    stack["broker"], stack["port"] = broker, port
    api, api_port = start_api(dsn, workdir)
    stack["procs"].append(api)
    stack["api"], stack["api_port"] = api, api_port
    t1 = time.monotonic()
    ingest, http = start_ingest(dsn, port, workdir)
    stack["procs"].append(ingest)
    stack["ingest"] = ingest
    try:
        wait_ready(ingest, http, "cityops ingest", timeout=start_timeout)
    except SystemExit as err:
        # what the worker was doing when it ran out of time (py-spy, when installed)
        stack["error"] = str(err)
        stack["ingest_stack"] = _py_spy(ingest.pid)
        stop_stack(admin, stack)
        raise StackStartError(stack) from err
    stack["ingest_start_s"] = round(time.monotonic() - t1, 1)
    wait_ready(api, api_port, "cityops api")
    return stack


class StackStartError(Exception):
    """A scenario's processes did not start; ``stack`` says why."""

    def __init__(self, stack: dict[str, Any]) -> None:
        super().__init__(stack.get("error"))
        self.stack = stack


def _py_spy(pid: int) -> list[str]:
    """The main thread's innermost frames of ``pid`` (empty without py-spy)."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(binary).exists():
        return []
    try:
        out = subprocess.run(  # noqa: S603 - py-spy on our own child process
            [binary, "dump", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines = out.splitlines()
    main = next((i for i, line in enumerate(lines) if "MainThread" in line), None)
    return [line.strip() for line in lines[main + 1 : main + 7]] if main is not None else []


def stop_stack(admin: str, stack: dict[str, Any], *, keep: bool = False) -> None:
    """Stop the processes (ingest first: it flushes), drop the database."""
    for proc in reversed(stack["procs"]):
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    if keep:
        note(f"kept database {stack['db_name']}")
    else:
        drop_database(admin, stack["db_name"])


def note(what: str) -> None:
    """Progress on stderr."""
    print(f"[{datetime.now(UTC):%H:%M:%S}] {what}", file=sys.stderr, flush=True)


def main() -> None:  # noqa: PLR0915 - one linear script
    """Run the phases and print the JSON result."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--speeds", default="10,30,60,120", help="district speed-ups to try")
    parser.add_argument("--skip-city", action="store_true")
    parser.add_argument(
        "--births",
        action="store_true",
        help="start the district with every device's online status (a reconnect storm)",
    )
    parser.add_argument("--skip-district", action="store_true")
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--start-timeout", type=float, default=600, help="seconds `cityops ingest` may take"
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases and logs")
    parser.add_argument(
        "--publish", nargs=6, metavar=("PORT", "SCENARIO", "SPEED", "S", "SEED", "BIRTHS")
    )
    args = parser.parse_args()
    if args.publish:
        port, scn, speed, secs, seed, births = args.publish
        publish(int(port), scn, float(speed), float(secs), int(seed), births == "1")
        return
    from cityops import logging as cityops_logging
    from cityops.settings import LogSettings

    cityops_logging.configure(LogSettings(level="warning"))  # stdout carries only the JSON
    admin = admin_dsn(args.dsn)
    result: dict[str, Any] = {
        "minutes_per_phase": args.minutes,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "phases": [],
        "first_bottleneck": None,
    }
    # (speed, births): the district starts with every device announcing itself online (the
    # simulator's births: one status message per device), then runs steady and faster
    plan: list[tuple[str, list[tuple[float, bool]]]] = []
    if not args.skip_district:
        speeds = [float(s) for s in args.speeds.split(",") if s]
        steady = [(1.0, False)] + [(s, False) for s in speeds]
        plan.append(("district", ([(1.0, True)] if args.births else []) + steady))
    if not args.skip_city:
        plan.append(("city", [(1.0, False)]))
    for scenario_name, phases in plan:
        workdir = Path(tempfile.mkdtemp(prefix=f"cityops-soak-{scenario_name}-"))
        note(f"{scenario_name}: registry and processes")
        try:
            stack = start_stack(admin, scenario_name, args.seed, workdir, args.start_timeout)
        except StackStartError as failed:
            result[f"{scenario_name}_setup"] = {
                k: failed.stack.get(k)
                for k in ("devices_registered", "registry_s", "error", "ingest_stack")
            } | {"ingest_start_timeout_s": args.start_timeout}
            if result["first_bottleneck"] is None:
                result["first_bottleneck"] = {"phase": f"{scenario_name} start"} | result[
                    f"{scenario_name}_setup"
                ]
            shutil.rmtree(workdir, ignore_errors=True)
            continue
        result[f"{scenario_name}_setup"] = {
            k: stack[k] for k in ("devices_registered", "registry_s", "ingest_start_s")
        }
        try:
            misses = 0
            for speed, births in phases:
                note(f"{scenario_name} x{speed:g} (births {births}) for {args.minutes} min")
                phase = run_phase(
                    stack, scenario_name, speed, args.minutes, args.seed, births=births
                )
                result["phases"].append(phase)
                note(json.dumps({k: v for k, v in phase.items() if not isinstance(v, dict)}))
                why = gave(phase)
                phase["gave"] = why
                if why and result["first_bottleneck"] is None:
                    result["first_bottleneck"] = bottleneck(phase, why)
                # faster only while it holds, or after a first miss (a start-up surge can miss
                # once); two misses in a row end the scenario
                misses = misses + 1 if why else 0
                if misses >= 2 and not births:
                    break
        finally:
            stop_stack(admin, stack, keep=args.keep)
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()

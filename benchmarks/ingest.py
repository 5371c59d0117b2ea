"""Ingest benchmark: MQTT -> validated batches -> PostgreSQL, against baselines in the same run.

Creates its own database on the server named by ``--dsn`` (else CITYOPS_BENCH_DSN, else
CITYOPS_TEST_DSN, else postgresql://postgres@127.0.0.1:5432/postgres), with the storage path
``--storage partitions`` (native partitions, the default) or ``--storage timescaledb``
(hypertables; the server must have TimescaleDB 2.18.1+ preloaded, e.g. the compose stack's
``db``), and starts its own mosquitto from
deploy/mosquitto/mosquitto.conf (auth and ACLs on, devices publish as themselves). Prints one
JSON object.

- baseline A ``copy_rows_per_s``: binary COPY of heating rows from memory into heating_readings;
- baseline B ``drain_msgs_per_s``: a bare paho subscriber (MQTT 5, same Receive Maximum, auto
  ack, no processing) draining a queue of single-reading messages the broker holds for it;
- ``batched_readings_per_s``: ingest draining a held queue of gateway messages of 100 readings,
  counted as committed rows;
- ``single_msgs_per_s``: ingest draining a held queue of single-reading messages;
- ``latency_p50_ms`` / ``latency_p99_ms``: publish -> commit (seen by a batch consumer right after
  the commit) while a separate publisher process sends single readings at half of
  ``single_msgs_per_s``;
- ``published`` / ``stored``: every reading published to ingest vs rows in the table.

Draining a queue the broker already holds measures the consumer alone: the publisher (Python
too, on the same machine) is not running while the clock runs.

    .venv/bin/python benchmarks/ingest.py [--quick] [--storage timescaledb|partitions] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from psycopg import sql  # noqa: E402

from cityops import registry  # noqa: E402
from cityops.batch import CommittedBatch  # noqa: E402
from cityops.broker_auth import device_password  # noqa: E402
from cityops.db import migrate  # noqa: E402
from cityops.ports import free_port  # noqa: E402
from cityops.settings import DatabaseSettings, IngestSettings, MqttSettings, Settings  # noqa: E402
from ingest.broker import default_config_path, render_config, write_credentials  # noqa: E402
from ingest.client import queue_pubacks  # noqa: E402
from ingest.service import IngestService  # noqa: E402
from ingest.writer import PG_EPOCH_MS  # noqa: E402

SECRET = "bench-secret"  # noqa: S105 - a throwaway broker of this run
INGEST_PW = "bench-ingest"
SINGLE_DEVICES = [f"HT-S{i}" for i in range(10)]
# The paced latency publisher's devices. A reading's ts is its publish time in ms, nudged to stay
# unique per device; with 10 devices a rate above 10,000 msg/s is more than one reading per
# device per ms, the nudges add up and ts runs ahead of the clock (negative latencies). 20
# devices give each one under 600 readings/s at the rates measured here. One Python publisher
# process tops out at about 7,000-9,000 msg/s here, so PACED_PROCESSES processes share the rate,
# each with its own slice of the devices.
LATENCY_DEVICES = [f"HT-L{i:02d}" for i in range(20)]
PACED_PROCESSES = 2
GATEWAY = "GW-B"
GATEWAY_DEVICES = [f"HT-G{i:03d}" for i in range(100)]
RECEIVE_MAXIMUM = 2000
T_SINGLE = 1_735_689_600_000  # 2025-01-01, one ms apart per message
T_BATCHED = 1_738_368_000_000  # 2025-02-01


def _with_db(dsn: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(dsn)
    parts["dbname"] = name
    return make_conninfo(**{k: v for k, v in parts.items() if v is not None})


# The broker has a services listener (the port passed around here) and a device listener.
_DEVICE_PORT: dict[int, int] = {}


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """mosquitto from the project config, credentials for the benchmark's devices.

    Returns the services listener's port; devices connect to ``_DEVICE_PORT[port]``.
    """
    write_credentials(
        workdir,
        [*SINGLE_DEVICES, *LATENCY_DEVICES, *GATEWAY_DEVICES, GATEWAY],
        secret=SECRET,
        service_passwords={"cityops-ingest": INGEST_PW},
    )
    port = free_port()
    device_port = free_port()
    _DEVICE_PORT[port] = device_port
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
    import socket

    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start; see " + str(workdir / "mosquitto.log"))


def make_client(
    client_id: str, user: str, password: str, *, manual_ack: bool = False
) -> mqtt.Client:
    """A paho MQTT 5 client with a large in-flight window for publishing."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    c.username_pw_set(user, password)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    return c


class Publishers:
    """One connection per device (the ACL lets a device write only its own topics)."""

    def __init__(self, port: int, users: list[str]) -> None:
        port = _DEVICE_PORT.get(port, port)
        self.clients: dict[str, mqtt.Client] = {}
        for user in users:
            c = make_client(
                f"pub-{user}-{uuid.uuid4().hex[:4]}", user, device_password(SECRET, user)
            )
            c.connect("127.0.0.1", port)
            c.loop_start()
            self.clients[user] = c
        for c in self.clients.values():
            while not c.is_connected():
                time.sleep(0.01)

    def publish_all(self, messages: list[tuple[str, str, bytes]]) -> None:
        """Publish (user, topic, payload) QoS 1 and wait for every PUBACK."""
        infos = [self.clients[u].publish(t, p, qos=1) for u, t, p in messages]
        for info in infos:
            info.wait_for_publish(120)

    def close(self) -> None:
        """Disconnect all."""
        for c in self.clients.values():
            c.disconnect()
            c.loop_stop()


def single_messages(n: int, t0: int) -> list[tuple[str, str, bytes]]:
    """n single-reading messages over the single devices, distinct (device, ts)."""
    out = []
    for i in range(n):
        dev = SINGLE_DEVICES[i % len(SINGLE_DEVICES)]
        body = {"ts": t0 + i, "values": {"temperature_c": 20.0 + (i % 50) / 10, "battery_pct": 90}}
        out.append((dev, f"cityops/v1/heating/{dev}/telemetry", json.dumps(body).encode()))
    return out


def gateway_messages(n: int, t0: int) -> list[tuple[str, str, bytes]]:
    """n gateway messages of 100 readings each (one per device behind the gateway)."""
    out = []
    for i in range(n):
        body = {
            dev: [{"ts": t0 + i * 1000, "values": {"temperature_c": 19.5, "humidity_pct": 40}}]
            for dev in GATEWAY_DEVICES
        }
        out.append((GATEWAY, f"cityops/v1/gateway/{GATEWAY}/telemetry", json.dumps(body).encode()))
    return out


def copy_baseline(dsn: str, n: int) -> float:
    """Rows/s of a binary COPY of n heating rows from memory into heating_readings.

    Timestamps are sent the way ingest's writer sends them (int64 microseconds since 2000, the
    binary timestamptz format), so the baseline is the fastest COPY we know, not a slower one.
    """
    base_us = (1_717_200_000_000 - PG_EPOCH_MS) * 1000  # 2024-06-01
    rows = [
        (f"HT-C{i % 1000}", base_us + i * 1_000_000, 20.5, 40.0, 90.0, base_us) for i in range(n)
    ]
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        for start in range(0, n, 5000):  # same batch size as ingest, one commit each
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY heating_readings (device_id, ts, temperature_c, humidity_pct, "
                    "battery_pct, received_at) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["text", "int8", "float8", "float8", "float8", "int8"])
                for row in rows[start : start + 5000]:
                    copy.write_row(row)
            conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("TRUNCATE heating_readings")
        conn.commit()
    return n / elapsed


def drain_baseline(port: int, n: int, *, batched_acks: bool = False) -> float:
    """Msg/s of a bare subscriber draining n held single-reading messages.

    Default: paho's automatic acks (one PUBACK queued, and the network thread woken, per
    message). ``batched_acks``: manual acks, queued every 500 messages in one go the way ingest
    queues a batch's acks (``ingest.client.queue_pubacks``) -- the bare drain with ingest's ack
    strategy, so the comparison also shows what is left once both ack alike.
    """
    client_id = "bench-drain-batched" if batched_acks else "bench-drain"
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    got = 0
    done = threading.Event()
    subscribed = threading.Event()

    pending: list[int] = []

    def on_message(c: Any, u: Any, m: Any) -> None:
        nonlocal got
        got += 1
        if batched_acks:
            pending.append(m.mid)
            if len(pending) >= 500 or got >= n:
                if not queue_pubacks(c, pending):
                    raise SystemExit("this paho version cannot queue acks in a batch")
                pending.clear()
        if got >= n:
            done.set()

    c = make_client(client_id, "cityops-ingest", INGEST_PW)
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect("127.0.0.1", port, clean_start=True, properties=props)
    c.loop_start()
    c.subscribe("cityops/v1/+/+/telemetry", qos=1)
    subscribed.wait(10)
    c.disconnect()
    c.loop_stop()
    pubs = Publishers(port, SINGLE_DEVICES)
    pubs.publish_all(single_messages(n, T_SINGLE - 10_000_000_000))
    pubs.close()
    c = make_client(client_id, "cityops-ingest", INGEST_PW, manual_ack=batched_acks)
    c.on_message = on_message
    started = time.perf_counter()
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    done.wait(300)
    elapsed = time.perf_counter() - started
    # drop the session so it queues nothing more
    c.disconnect()
    c.loop_stop()
    end = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    end.SessionExpiryInterval = 0
    c = make_client(client_id, "cityops-ingest", INGEST_PW)
    c.connect("127.0.0.1", port, clean_start=True, properties=end)
    c.disconnect()
    if got < n:
        raise SystemExit(f"bare subscriber drained only {got} of {n}")
    return n / elapsed


class Latency:
    """A batch consumer recording commit time minus reading ts."""

    def __init__(self) -> None:
        self.samples: list[np.ndarray] = []

    def on_batch(self, batch: CommittedBatch) -> None:
        now_ms = time.time_ns() // 1_000_000
        for kb in batch.readings.values():
            self.samples.append(now_ms - kb.ts_ms)


def ingest_settings(dsn: str, port: int) -> Settings:
    """Settings of the ingest worker under test."""
    return Settings(
        db=DatabaseSettings(dsn=dsn),
        mqtt=MqttSettings(
            host="127.0.0.1",
            port=port,
            username="cityops-ingest",
            password=INGEST_PW,  # type: ignore[arg-type]
        ),
        ingest=IngestSettings(
            http_port=0,
            subscription_group=None,
            receive_maximum=RECEIVE_MAXIMUM,
            batch_max_rows=5000,
            batch_max_ms=50,
        ),
    )


def rows_stored(service: IngestService) -> int:
    """Committed reading rows according to the service (a plain attribute, cheap to poll).

    Polling the Prometheus registry instead (``get_sample_value`` collects every metric, about
    0.2 ms) every 2 ms would cost the process under test ~10 % of a core and the GIL; the bare
    drain baseline waits on an event and pays nothing.
    """
    return service.rows_committed


def timed_drain(settings: Settings, expected: int, consumers: list[Any] | None = None) -> float:
    """Seconds from start until ``expected`` rows are committed by a fresh ingest worker."""
    service = IngestService(settings, consumers or [], client_id="bench-ingest")
    started = time.perf_counter()
    service.start()
    while rows_stored(service) < expected:
        time.sleep(0.002)
        if time.perf_counter() - started > 600:
            raise SystemExit("ingest did not drain the queue in 10 minutes")
    elapsed = time.perf_counter() - started
    service.stop()
    return elapsed


def create_session(settings: Settings) -> None:
    """Start and stop ingest once so the broker keeps a session (and queue) for it."""
    service = IngestService(settings, [], client_id="bench-ingest")
    service.start(wait_subscribed_s=10)
    service.stop()


def paced_publisher(port: int, rate: float, seconds: float, part: int) -> None:
    """(Subprocess mode) publish single readings at ``rate``/s, ts = publish time in ms.

    Uses slice ``part`` of LATENCY_DEVICES (one of PACED_PROCESSES publishers).
    """
    devices = LATENCY_DEVICES[part::PACED_PROCESSES]
    if shutil.which("mosquitto_pub") and os.environ.get("BENCH_PUBLISHER") != "paho":
        paced_publisher_c(port, rate, seconds, devices)
        return
    pubs = Publishers(port, devices)
    n = int(rate * seconds)
    started = time.perf_counter()
    infos = []
    last_ts: dict[str, int] = {}
    for i in range(n):
        target = started + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        dev = devices[i % len(devices)]
        now = time.time_ns() // 1_000_000
        while now <= last_ts.get(dev, -1):
            # this device already sent in this ms: wait for the next one rather than set ts
            # ahead of the publish time (keys must stay distinct per device, latency exact)
            time.sleep(0.0002)
            now = time.time_ns() // 1_000_000
        ts = now
        last_ts[dev] = ts
        body = json.dumps({"ts": ts, "values": {"temperature_c": 21.0}}).encode()
        infos.append(pubs.clients[dev].publish(f"cityops/v1/heating/{dev}/telemetry", body, qos=1))
    sent_s = time.perf_counter() - started
    for info in infos:
        info.wait_for_publish(60)
    pubs.close()
    print(n, round(n / sent_s))


def paced_publisher_c(port: int, rate: float, seconds: float, devices: list[str]) -> None:
    """The paced publisher with the MQTT work in C: one ``mosquitto_pub -l`` per device.

    This process only paces and writes one line per reading (the publish time as ts) to the
    device's mosquitto_pub; a paho publisher in Python costs about a core at 5,000 msg/s, which
    on two cores is taken from the ingest being measured.
    """
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for dev in devices:
        procs[dev] = subprocess.Popen(  # noqa: S603 - fixed arguments
            [
                *("mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", "5"),
                *("-u", dev, "-P", device_password(SECRET, dev), "-i", f"pub-c-{dev}"),
                *("-t", f"cityops/v1/heating/{dev}/telemetry", "-q", "1", "-M", "1000", "-l"),
            ],
            stdin=subprocess.PIPE,
            bufsize=0,
        )
    time.sleep(0.5)  # let every client connect before the clock starts
    n = int(rate * seconds)
    started = time.perf_counter()
    last_ts: dict[str, int] = {}
    for i in range(n):
        target = started + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        dev = devices[i % len(devices)]
        now = time.time_ns() // 1_000_000
        while now <= last_ts.get(dev, -1):  # one reading per device per ms, as above
            time.sleep(0.0002)
            now = time.time_ns() // 1_000_000
        last_ts[dev] = now
        stdin = procs[dev].stdin
        assert stdin is not None
        stdin.write(b'{"ts":%d,"values":{"temperature_c":21.0}}\n' % now)
    sent_s = time.perf_counter() - started
    for proc in procs.values():
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs.values():
        if proc.wait(timeout=120) != 0:
            raise RuntimeError(f"mosquitto_pub exited with {proc.returncode}")
    print(n, round(n / sent_s))


LOW_RATE = 1000
# Retention and compression age of the benchmark database, longer than the age of its readings.
BENCH_KEEP_DAYS = 36_500


def measure_latency(
    settings: Settings, port: int, rate: float, seconds: float
) -> tuple[int, int, np.ndarray]:
    """Publish at ``rate`` from a separate process into a running ingest; commit latencies."""
    latency = Latency()
    service = IngestService(settings, [latency], client_id="bench-ingest")
    service.start(wait_subscribed_s=10)
    procs = [
        subprocess.Popen(  # noqa: S603 - this script, with numbers
            [
                *(sys.executable, __file__, "--publish-paced"),
                *(str(_DEVICE_PORT.get(port, port)), str(rate / PACED_PROCESSES)),
                *(str(seconds), str(part)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for part in range(PACED_PROCESSES)
    ]
    paced = achieved = 0
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"paced publisher failed ({proc.returncode})")
        n_text, rate_text = out.strip().splitlines()[-1].split()
        paced += int(n_text)
        achieved += int(rate_text)
    while sum(len(s) for s in latency.samples) < paced:
        time.sleep(0.01)
    service.stop()
    lat = np.concatenate(latency.samples) if latency.samples else np.array([0])
    return paced, achieved, lat


def main() -> None:  # noqa: PLR0915 - one linear script
    """Run every phase and print the JSON result."""
    from cityops import logging as cityops_logging
    from cityops.settings import LogSettings

    # Logs go to stderr: stdout carries only the one JSON object.
    cityops_logging.configure(LogSettings(level="warning"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under two minutes")
    parser.add_argument(
        "--storage",
        choices=("partitions", "timescaledb"),
        default="partitions",
        help="storage path of the benchmark database: native partitions (default) or "
        "TimescaleDB hypertables (the server must have TimescaleDB 2.18.1+ preloaded)",
    )
    parser.add_argument(
        "--dsn",
        default=None,
        help="server to benchmark on (a maintenance database such as .../postgres; the "
        "benchmark creates and drops its own database there). Default: CITYOPS_BENCH_DSN, "
        "else CITYOPS_TEST_DSN, else postgresql://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument("--publish-paced", nargs=4, metavar=("PORT", "RATE", "SECONDS", "PART"))
    args = parser.parse_args()
    if args.publish_paced:
        port, rate, seconds, part = args.publish_paced
        paced_publisher(int(port), float(rate), float(seconds), int(part))
        return

    n_copy = 200_000 if args.quick else 1_000_000
    n_drain = 20_000 if args.quick else 100_000
    n_single = 20_000 if args.quick else 100_000
    n_gateway = 1_000 if args.quick else 5_000
    latency_s = 10.0 if args.quick else 30.0

    admin = args.dsn or os.environ.get(
        "CITYOPS_BENCH_DSN",
        os.environ.get("CITYOPS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    timescaledb = "require" if args.storage == "timescaledb" else "off"
    dbname = f"cityops_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = _with_db(admin, dbname)
    workdir = Path(tempfile.mkdtemp(prefix="cityops-bench-"))
    broker = None
    try:
        settings0 = Settings(db=DatabaseSettings(dsn=dsn))
        with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:
            # The readings are dated 2024-2025: keep them (no retention drop, no compression of
            # their chunks by a policy job mid-run) so both paths store every row they are given.
            storage_settings = settings0.storage.model_copy(
                update={
                    "timescaledb": timescaledb,
                    "retention_days": BENCH_KEEP_DAYS,
                    "compress_after_days": BENCH_KEEP_DAYS,
                }
            )
            migrate.migrate(conn, storage_settings)
        with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
            registry.import_areas(conn, registry.reference_area_records(), "reference")
            (area,) = conn.execute("SELECT min(code) FROM areas").fetchone()  # type: ignore[misc]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO devices (device_id, kind, area_code, gateway_id) "
                    "VALUES (%s, 'heating', %s, %s)",
                    [(d, area, None) for d in [*SINGLE_DEVICES, *LATENCY_DEVICES]]
                    + [(d, area, GATEWAY) for d in GATEWAY_DEVICES],
                )
        broker, port = start_broker(workdir)
        settings = ingest_settings(dsn, port)

        copy_rows_per_s = copy_baseline(dsn, n_copy)
        drain_msgs_per_s = drain_baseline(port, n_drain)
        drain_batched_msgs_per_s = drain_baseline(port, n_drain, batched_acks=True)

        create_session(settings)
        # publishers are closed before each timed drain, as in the drain baseline: their idle
        # network threads must not share the process (and its GIL) with the consumer measured
        pubs = Publishers(port, SINGLE_DEVICES)
        pubs.publish_all(single_messages(n_single, T_SINGLE))
        pubs.close()
        single_s = timed_drain(settings, n_single)
        single_msgs_per_s = n_single / single_s

        pubs = Publishers(port, [GATEWAY])
        pubs.publish_all(gateway_messages(n_gateway, T_BATCHED))
        pubs.close()
        batched_total = n_gateway * len(GATEWAY_DEVICES)
        batched_s = timed_drain(settings, batched_total)
        batched_readings_per_s = batched_total / batched_s

        rate = single_msgs_per_s / 2
        paced, achieved, lat = measure_latency(settings, port, rate, latency_s)
        low_paced, _, low_lat = measure_latency(settings, port, LOW_RATE, latency_s / 2)
        paced += low_paced

        published = n_single + batched_total + paced
        with psycopg.connect(dsn) as conn:
            (stored,) = conn.execute("SELECT count(*) FROM heating_readings").fetchone()  # type: ignore[misc]
            (dead,) = conn.execute("SELECT count(*) FROM dead_letters").fetchone()  # type: ignore[misc]
            (server, tsdb) = conn.execute(  # type: ignore[misc]
                "SELECT current_setting('server_version'), "
                "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')"
            ).fetchone()
        result = {
            "copy_rows_per_s": round(copy_rows_per_s),
            "drain_msgs_per_s": round(drain_msgs_per_s),
            "batched_readings_per_s": round(batched_readings_per_s),
            "batched_ratio_to_copy": round(batched_readings_per_s / copy_rows_per_s, 3),
            "single_msgs_per_s": round(single_msgs_per_s),
            "single_ratio_to_drain": round(single_msgs_per_s / drain_msgs_per_s, 3),
            "drain_batched_ack_msgs_per_s": round(drain_batched_msgs_per_s),
            "single_ratio_to_drain_batched_ack": round(
                single_msgs_per_s / drain_batched_msgs_per_s, 3
            ),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 1),
            "latency_rate_msgs_per_s": round(rate),
            "latency_rate_achieved_msgs_per_s": achieved,
            "latency_low_rate_msgs_per_s": LOW_RATE,
            "latency_low_rate_p50_ms": round(float(np.percentile(low_lat, 50)), 1),
            "latency_low_rate_p99_ms": round(float(np.percentile(low_lat, 99)), 1),
            "published": published,
            "stored": int(stored),
            "dead_letters": int(dead),
            "params": {
                "quick": args.quick,
                "storage": args.storage,
                "postgresql": server,
                "timescaledb": tsdb,
                "retention_and_compress_after_days": BENCH_KEEP_DAYS,
                "copy_rows": n_copy,
                "drain_msgs": n_drain,
                "single_msgs": n_single,
                "gateway_msgs": n_gateway,
                "readings_per_gateway_msg": len(GATEWAY_DEVICES),
                "latency_seconds": latency_s,
                "receive_maximum": RECEIVE_MAXIMUM,
                "batch_max_rows": 5000,
                "batch_max_ms": 50,
            },
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        }
        print(json.dumps(result))
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


if __name__ == "__main__":
    main()

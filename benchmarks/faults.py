"""Fault benchmark: readings published by devices vs stored, through real faults.

Creates its own database on the server named by CITYOPS_BENCH_DSN (else CITYOPS_TEST_DSN, else
postgresql://postgres@127.0.0.1:5432/postgres), starts its own mosquitto from
deploy/mosquitto/mosquitto.conf (two listeners, auth and ACLs on) and runs `cityops ingest` as a
separate process (``--no-stream --no-alerts``: the faults are about storing). For each case, ten
devices publish single QoS 1 readings at a steady rate with their own credentials while the fault
happens; afterwards the benchmark waits for ingest to catch up and compares:

- ``published``: readings the broker acknowledged to the devices (a device will not resend them);
- ``stored``: distinct readings of the case in the database;
- ``lost``: published but not stored; ``duplicated``: stored rows beyond one per reading.

Cases: ``ingest_kill9`` (kill -9 of ingest mid-stream, restarted after 1 s), ``db_outage``
(connections to the database refused and terminated for a while), ``broker_restart``
(SIGTERM, start again on the same ports and data), ``broker_kill9`` (kill -9, start again),
``session_takeover`` (a device's real credentials with ingest's client id, clean start, on both
listeners, and with another device's id, repeatedly, mid-stream). Prints one JSON object.

    .venv/bin/python benchmarks/faults.py [--quick] [--autosave-on-changes N] [--stream]

``--stream`` runs ingest with its stream core (live rates) and adds, per case, the largest
``cityops_stream_lag_seconds`` and the /readyz samples that were not ready during the case, the
seconds until the lag was 0 again, and whether the case's hours in ``rates_hourly`` equal a
recompute of them (``rates_rows``, ``rates_mismatched``; issue 16).

``--autosave-on-changes N`` runs the broker with ``autosave_on_changes true`` and
``autosave_interval N`` instead of the shipped time-based autosave (docs/operations.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg import sql

from cityops import registry
from cityops.broker_auth import device_password
from cityops.db import migrate
from cityops.ports import free_port
from cityops.settings import DatabaseSettings, Settings
from ingest.broker import default_config_path, render_config, write_credentials

SECRET = "faults-secret"  # noqa: S105 - a throwaway broker of this run
INGEST_PW = "faults-ingest"
DEVICES = [f"HT-F{i}" for i in range(10)]
INGEST_ID = "faults-ingest"
T0 = 1_735_689_600_000  # readings' ts: T0 + case * 10^9 + n ms, unique per case and device


def _wait_port(port: int, timeout_s: float = 15.0) -> bool:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


class Broker:
    """The project's mosquitto on fixed ports and data folder, restartable."""

    def __init__(self, workdir: Path, autosave_on_changes: int | None) -> None:
        self.workdir = workdir
        self.port = free_port()  # services listener
        self.device_port = free_port()
        write_credentials(
            workdir, DEVICES, secret=SECRET, service_passwords={"cityops-ingest": INGEST_PW}
        )
        text = render_config(
            default_config_path().read_text(encoding="utf-8"),
            port=self.device_port,
            service_port=self.port,
            data_dir=workdir,
            password_file=workdir / "passwd",
            acl_file=workdir / "acl",
            run_as="root" if os.geteuid() == 0 else None,
        )
        if autosave_on_changes is not None:
            lines = [ln for ln in text.splitlines() if not ln.startswith("autosave_")]
            lines += ["autosave_on_changes true", f"autosave_interval {autosave_on_changes}"]
            text = "\n".join(lines) + "\n"
        (workdir / "mosquitto.conf").write_text(text, encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start mosquitto and wait for both listeners."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - the system mosquitto, our config
            [binary, "-c", str(self.workdir / "mosquitto.conf")], stdout=log, stderr=log
        )
        if not (_wait_port(self.port) and _wait_port(self.device_port)):
            raise SystemExit(f"mosquitto did not start; see {self.workdir / 'mosquitto.log'}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal mosquitto and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)


class Ingest:
    """`cityops ingest` as a separate process (so it can be killed)."""

    def __init__(self, dsn: str, broker: Broker, workdir: Path, *, stream: bool = False) -> None:
        self.stream = stream
        self.http_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
        self.env.update(
            {
                "CITYOPS_DB_DSN": dsn,
                "CITYOPS_DB_CONNECT_TIMEOUT_S": "2",
                "CITYOPS_MQTT_HOST": "127.0.0.1",
                "CITYOPS_MQTT_PORT": str(broker.port),
                "CITYOPS_MQTT_USERNAME": "cityops-ingest",
                "CITYOPS_MQTT_PASSWORD": INGEST_PW,
                "CITYOPS_INGEST_HTTP_PORT": str(self.http_port),
                "CITYOPS_INGEST_RETRY_MAX_S": "1",
                "CITYOPS_LOG_FORMAT": "json",
                "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            }
        )
        self.log = workdir / "ingest.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker (its persistent session is ``INGEST_ID``)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - this interpreter, the cityops CLI
                [
                    *(sys.executable, "-m", "cityops", "ingest", "--client-id", INGEST_ID),
                    *(() if self.stream else ("--no-stream",)),
                    "--no-alerts",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait for /readyz (database reachable, subscribed): its session exists from then on."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{self.http_port}/readyz"
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"ingest did not become ready; see {self.log}")

    def probe(self) -> tuple[float | None, bool]:
        """(cityops_stream_lag_seconds or None, /readyz answered 200)."""
        import urllib.error
        import urllib.request

        lag: float | None = None
        ready = False
        port = self.http_port
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("cityops_stream_lag_seconds "):
                        lag = float(line.split()[1])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                ready = r.status == 200
        except (urllib.error.URLError, OSError):
            pass
        return lag, ready

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the worker and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)


class Devices:
    """Ten devices publishing single readings at ``rate`` msg/s; records what was acknowledged."""

    def __init__(self, broker: Broker, base_ts: int, rate: float) -> None:
        self.base_ts = base_ts
        self.rate = rate
        self.lock = threading.Lock()
        self.acked: set[tuple[str, int]] = set()
        self.pending: dict[tuple[str, int], tuple[str, int]] = {}
        self.early: set[tuple[str, int]] = set()  # acknowledged before publish() returned
        self.clients: dict[str, mqtt.Client] = {}
        self.stop = threading.Event()
        for d in DEVICES:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=d, protocol=mqtt.MQTTv5)
            c.username_pw_set(d, device_password(SECRET, d))
            c.max_inflight_messages_set(100)
            c.max_queued_messages_set(0)
            c.reconnect_delay_set(1, 2)
            c.on_publish = self._on_publish
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
            c.connect("127.0.0.1", broker.device_port, clean_start=False, properties=props)
            c.loop_start()
            self.clients[d] = c
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        name = client._client_id.decode()
        with self.lock:
            key = self.pending.pop((name, mid), None)
            if key is not None:
                self.acked.add(key)
            else:
                self.early.add((name, mid))

    def _run(self) -> None:
        n = 0
        started = time.monotonic()
        while not self.stop.is_set():
            due = started + n / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            d = DEVICES[n % len(DEVICES)]
            ts = self.base_ts + n
            payload = json.dumps({"ts": ts, "values": {"temperature_c": 20.0}})
            # not under self.lock: paho calls on_publish holding its own lock, which publish()
            # also takes (lock order)
            info = self.clients[d].publish(f"cityops/v1/heating/{d}/telemetry", payload, 1)
            with self.lock:
                if (d, info.mid) in self.early:
                    self.early.discard((d, info.mid))
                    self.acked.add((d, ts))
                else:
                    self.pending[(d, info.mid)] = (d, ts)
            n += 1

    def run_for(self, seconds: float) -> None:
        """Publish for ``seconds`` (in the background; call ``finish`` after)."""
        self.thread.start()
        time.sleep(seconds)
        self.stop.set()
        self.thread.join()

    def finish(self, timeout_s: float = 20.0) -> None:
        """Wait for outstanding acknowledgements (devices resend after a broker restart)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending:
                    break
            time.sleep(0.1)
        for c in self.clients.values():
            c.disconnect()
            c.loop_stop()


def _stored(dsn: str, lo: int, hi: int) -> tuple[int, int]:
    """(rows, distinct readings) of the case's ts range."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, ts)) FROM heating_readings "
            "WHERE ts >= to_timestamp(%s / 1000.0) AND ts < to_timestamp(%s / 1000.0)",
            (lo, hi),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _set_connections(admin: str, dbname: str, *, allow: bool) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(dbname), sql.SQL("true" if allow else "false")
            )
        )
        if not allow:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )


def _takeover_attempts(broker: Broker, stop: threading.Event) -> int:
    """A device's real credentials trying ingest's session and another device's, repeatedly."""
    attempts = 0
    while not stop.is_set():
        for port, cid in (
            (broker.device_port, INGEST_ID),
            (broker.port, INGEST_ID),
            (broker.device_port, DEVICES[1]),
        ):
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
            c.username_pw_set(DEVICES[0], device_password(SECRET, DEVICES[0]))
            try:
                c.connect("127.0.0.1", port, clean_start=True)
                c.loop(0.2)
                c.loop(0.2)
                c.disconnect()
            except OSError:
                pass
            attempts += 1
        stop.wait(0.5)
    return attempts


def run_case(
    name: str,
    index: int,
    dsn: str,
    admin: str,
    dbname: str,
    broker: Broker,
    ingest: Ingest,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    """Publish for ``seconds`` with the fault of ``name`` in the middle; count the outcome."""
    base = T0 + index * 1_000_000_000
    devices = Devices(broker, base, rate)
    extra: dict[str, Any] = {}

    def fault() -> None:
        time.sleep(seconds / 3)
        if name == "ingest_kill9":
            ingest.stop(signal.SIGKILL)
            time.sleep(1.0)
            ingest.start()
        elif name == "db_outage":
            _set_connections(admin, dbname, allow=False)
            time.sleep(seconds / 3)
            _set_connections(admin, dbname, allow=True)
        elif name in ("broker_restart", "broker_kill9"):
            broker.stop(signal.SIGTERM if name == "broker_restart" else signal.SIGKILL)
            time.sleep(0.5)
            broker.start()
        elif name == "session_takeover":
            stop = threading.Event()
            counter: list[int] = []
            t = threading.Thread(target=lambda: counter.append(_takeover_attempts(broker, stop)))
            t.start()
            time.sleep(seconds / 3)
            stop.set()
            t.join()
            extra["takeover_attempts"] = counter[0] if counter else 0

    watch = _Watch(ingest)
    if ingest.stream:
        watch.start()
    f = threading.Thread(target=fault)
    f.start()
    devices.run_for(seconds)
    f.join()
    devices.finish()
    published = len(devices.acked)
    hi = base + 1_000_000_000
    # wait until everything is stored, or nothing new was stored for 10 s (the rest is lost)
    rows, distinct = _stored(dsn, base, hi)
    last_change = time.monotonic()
    while distinct < published and time.monotonic() - last_change < 10.0:
        time.sleep(0.5)
        before = distinct
        rows, distinct = _stored(dsn, base, hi)
        if distinct != before:
            last_change = time.monotonic()
    time.sleep(1.0)  # a late redelivery would land as a duplicate now
    rows, distinct = _stored(dsn, base, hi)
    if ingest.stream:
        extra.update(watch.finish())
        extra.update(_rates_against_recompute(dsn, base))
    return {
        "published": published,
        "stored": distinct,
        "lost": max(0, published - distinct),
        "duplicated": rows - distinct,
        **extra,
    }


class _Watch:
    """Samples the stream core's lag and ingest's /readyz during a case (``--stream``)."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.max_lag_s = 0.0
        self.not_ready = 0
        self.samples = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.25):
            lag, ready = self.ingest.probe()
            self.samples += 1
            self.not_ready += not ready
            if lag is not None:
                self.max_lag_s = max(self.max_lag_s, lag)

    def finish(self) -> dict[str, Any]:
        """Wait (up to 60 s) for the lag to be 0 again; the figures of the case."""
        since = time.monotonic()
        while time.monotonic() - since < 60 and self.ingest.probe()[0] != 0.0:
            time.sleep(0.25)
        current_after = time.monotonic() - since
        self.done.set()
        self.thread.join()
        return {
            "stream_max_lag_s": round(self.max_lag_s, 2),
            "stream_current_after_s": round(current_after, 2),
            "readyz_not_ready_samples": f"{self.not_ready}/{self.samples}",
        }


def _rates_against_recompute(dsn: str, base: int) -> dict[str, int]:
    """The case's hours as live mode wrote them against a recompute of the same hours."""
    from datetime import UTC, datetime

    from cityops.catalog import Kind
    from stream.recompute import recompute

    lo = datetime.fromtimestamp(base // 3_600_000 * 3600, UTC)
    hi = datetime.fromtimestamp((base // 3_600_000 + 2) * 3600, UTC)  # and the hold's next hour
    query = (
        "SELECT area_code, metric, hour, numerator, denominator, samples FROM rates_hourly "
        "WHERE kind = 'heating' AND hour >= %s AND hour < %s"
    )
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        live = {r[:3]: r[3:] for r in conn.execute(query, (lo, hi))}
        recompute(conn, Settings(db=DatabaseSettings(dsn=dsn)), lo, hi, kinds=[Kind.HEATING])
        batch = {r[:3]: r[3:] for r in conn.execute(query, (lo, hi))}
    return {
        "rates_rows": len(batch),
        "rates_mismatched": sum(live.get(k) != v for k, v in batch.items())
        + len(set(live) - set(batch)),
    }


def main() -> None:
    """Run every case and print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s per case, about 2 minutes")
    parser.add_argument("--rate", type=float, default=300.0, help="messages per second")
    parser.add_argument("--autosave-on-changes", type=int, default=None, metavar="N")
    parser.add_argument(
        "--cases", default="ingest_kill9,db_outage,broker_restart,broker_kill9,session_takeover"
    )
    parser.add_argument(
        "--stream", action="store_true", help="run ingest with the stream core (live rates)"
    )
    args = parser.parse_args()
    from cityops import logging as cityops_logging
    from cityops.settings import LogSettings

    cityops_logging.configure(LogSettings(level="warning"))  # stdout is the JSON only
    # SIGTERM (a timeout) still stops the broker and ingest and drops the database
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    seconds = 10.0 if args.quick else 60.0
    admin = os.environ.get(
        "CITYOPS_BENCH_DSN",
        os.environ.get("CITYOPS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    dbname = f"cityops_faults_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    parts = {**conninfo_to_dict(admin), "dbname": dbname}
    dsn = make_conninfo(**{k: str(v) for k, v in parts.items() if v is not None})
    workdir = Path(tempfile.mkdtemp(prefix="cityops-faults-"))
    broker = Broker(workdir, args.autosave_on_changes)
    ingest = Ingest(dsn, broker, workdir, stream=args.stream)
    results: dict[str, Any] = {}
    try:
        settings = Settings(db=DatabaseSettings(dsn=dsn))
        with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:
            migrate.migrate(conn, settings.storage.model_copy(update={"timescaledb": "off"}))
        with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
            registry.import_areas(conn, registry.reference_area_records(), "reference")
            (area,) = conn.execute("SELECT min(code) FROM areas").fetchone()  # type: ignore[misc]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO devices (device_id, kind, area_code) VALUES (%s, 'heating', %s)",
                    [(d, area) for d in DEVICES],
                )
        broker.start()
        ingest.start()
        ingest.wait_ready()  # subscribed: its persistent session exists from here on
        for i, name in enumerate(args.cases.split(",")):
            results[name] = run_case(
                name, i, dsn, admin, dbname, broker, ingest, args.rate, seconds
            )
    finally:
        ingest.stop()
        broker.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        json.dumps(
            {
                "rate_msgs_per_s": args.rate,
                "seconds_per_case": seconds,
                "stream_core": args.stream,
                "broker_autosave": (
                    f"autosave_on_changes true, autosave_interval {args.autosave_on_changes}"
                    if args.autosave_on_changes is not None
                    else "shipped config (autosave_interval 30)"
                ),
                "cases": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""Anomaly benchmark: the product's detector against a plain baseline, on injected shapes.

Simulates a scenario with anomaly shapes injected (spike, step, drift, flatline, stuck, noisy:
simulators/shapes.py) after a first day that every detector learns from, and replays it through
the real path: a private mosquitto (the plain test config), ``IngestService`` with the consumers
of ``build_pipeline`` (the stream core's ``LiveRates``, which scores every reading, and the alert
engine with the shipped anomaly rules only). It then reads the alerts that fired and scores them
against the ground truth (docs/alerts.md, "Anomaly quality"):

- an alert matches a fault if it fires on the fault's device between the fault's start and its
  effect_end (no grace); a fault is detected if an alert matches it; a fault none of whose
  readings carried the shape (a spike between two reports) is left out of recall;
- ``precision`` is the rule's (per kind): matching alerts ÷ all its alerts, so it is the same
  for every shape of a kind; ``false_alerts_per_1000_sensor_days`` counts alerts on sensors
  without any fault, per 1,000 days of those sensors;
- ``detection_delay_p50_s``: fault start → first matching alert.

The same readings (read back from the database) go through a plain baseline written here: a
long-window Gaussian z-score per sensor (EWMA mean and variance with the product's memory and
warm-up, score before update, no seasonality, no floor beyond 1e-9, no flatline or noise
statistic) with the same episode semantics (fire at 7, resolve after an hour below 3.5), scored
the same way. ``ns_per_reading`` times the detector kernel on 1,000,000 room readings of 10,000
sensors (device/time order precomputed; ``ns_per_reading_with_order`` includes it).

    .venv/bin/python benchmarks/anomaly.py [--quick] [--seed N]

Creates its databases on CITYOPS_BENCH_DSN (else CITYOPS_TEST_DSN, else the local server).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder comes first on the path and its alerts.py would shadow the
# alerts package: the repository root goes first instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from alerts.quality import FiredAlert, TruthFault, score_anomalies  # noqa: E402
from alerts.rules import AnomalyRule, RuleHolder  # noqa: E402
from benchmarks.alerts import admin_dsn, scratch_db, start_broker, stop_all  # noqa: E402
from cityops import catalog, registry  # noqa: E402
from cityops.catalog import Kind  # noqa: E402
from cityops.settings import (  # noqa: E402
    AlertsSettings,
    DatabaseSettings,
    MqttSettings,
    Settings,
    StorageSettings,
    StreamSettings,
)
from simulators import messages, scenario  # noqa: E402
from simulators.engine import Simulation  # noqa: E402
from simulators.shapes import SHAPES  # noqa: E402
from stream import kernels  # noqa: E402
from stream.state import SensorState  # noqa: E402

START = datetime(2025, 12, 8, 0, tzinfo=UTC)  # heating season; lamps switch every evening
FIRE, CLEAR, HOLD_MS = 7.0, 3.5, 3_600_000
KINDS = (Kind.STREETLIGHT, Kind.HEATING, Kind.CHARGER)
# Shapes start once every detector has warmed up (a room's takes 25 h: every hour seen once).
SHAPES_AFTER = timedelta(hours=26)


def quiet_logs() -> None:
    """Warnings and errors only, on stderr: stdout is the JSON."""
    from cityops import logging as cityops_logging
    from cityops.settings import LogSettings

    cityops_logging.configure(LogSettings(level="warning"))


def log(msg: str) -> None:
    """Progress to stderr (stdout is the JSON)."""
    print(f"[anomaly] {msg}", file=sys.stderr, flush=True)


def anomaly_rules() -> dict[Kind, AnomalyRule]:
    """The shipped anomaly rules, by kind."""
    rules = RuleHolder().rules.rules
    return {r.kind: r for r in rules if isinstance(r, AnomalyRule) and r.kind is not None}


def rules_file(workdir: Path) -> Path:
    """A rules file with only the shipped anomaly rules (the others would only add load)."""
    shipped = yaml.safe_load((ROOT / "alerts/rules/default.yaml").read_text(encoding="utf-8"))
    kept = [r for r in shipped["rules"] if r.get("type") == "anomaly"]
    path = workdir / "anomaly-rules.yaml"
    path.write_text(yaml.safe_dump({"version": shipped["version"], "rules": kept}), "utf-8")
    return path


SIZES = {  # lamps, rooms, charging piles; days; shapes per device per day
    "quick": ((400, 600, 60), 2, 0.4),
    "full": ((800, 1_200, 150), 4, 0.2),
}


def build_sim(devices: tuple[int, int, int], days: int, seed: int, shape_rate: float) -> Simulation:
    """Lamps, rooms and charging piles; shapes injected once the detectors have learnt."""
    lamps, rooms, piles = devices
    spec = scenario.ScenarioSpec(
        name="anomaly",
        mains_lamps=lamps // 2,
        solar_lamps=lamps - lamps // 2,
        manholes=0,
        heating=rooms,
        chargers=piles,
    )
    return Simulation(
        scenario.generate(spec, seed=seed),
        start=START,
        duration=timedelta(days=days),
        fault_rate=0.0,
        shape_rate=shape_rate,
        shape_after=SHAPES_AFTER,
    )


def publish_run(sim: Simulation, port: int) -> int:
    """Publish every tick's messages in order (QoS 1); return the readings published."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
    # paho rescans every message in flight on each acknowledgement: a small window keeps that
    # cheap (1,000 in flight made the publisher the slowest part of the replay)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    readings = 0
    pending = []
    try:
        for out in sim.ticks():
            readings += len(out.readings)
            for m in messages.encode(out):
                pending.append(client.publish(m.topic, m.payload, qos=1))
            if len(pending) > 2000:
                for info in pending:
                    info.wait_for_publish(60)
                pending.clear()
        for info in pending:
            info.wait_for_publish(60)
    finally:
        client.loop_stop()
        client.disconnect()
    return readings


def _publish_child(sim: Simulation, port: int, go: Any, out: Any) -> None:
    """In a forked process: wait for the pipeline, publish the run, send back the readings
    published and the faults (the shapes count their readings in ``params`` as they go)."""
    go.wait(120)
    readings = publish_run(sim, port)
    out.send((readings, sim.faults))
    out.close()


class _Counter:
    """The last consumer: counts the readings handed on (the pipeline has seen them all)."""

    def __init__(self) -> None:
        self.readings = 0

    def on_batch(self, batch: Any) -> None:
        self.readings += batch.reading_count


def run_product(dsn: str, sim: Simulation, workdir: Path) -> tuple[list[FiredAlert], int, float]:
    """Publish the run through broker, ingest, stream and alerts; return fired anomaly alerts."""
    from cityops.cli.pipeline import build_pipeline
    from ingest.service import IngestService

    broker, port = start_broker(workdir)
    # The simulator and its publisher run in a process of their own (forked before the pipeline
    # starts any thread): in this one they took the GIL from the pipeline they feed.
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    publisher = ctx.Process(target=_publish_child, args=(sim, port, go, send), daemon=True)
    publisher.start()
    send.close()
    settings = Settings(
        db=DatabaseSettings(dsn=dsn),
        mqtt=MqttSettings(port=port, client_id=f"bench-{uuid.uuid4().hex[:6]}"),
        storage=StorageSettings(timescaledb="off"),
        alerts=AlertsSettings(rules_file=rules_file(workdir)),
    )
    pipeline = build_pipeline(settings)
    counter = _Counter()
    service = IngestService(settings, consumers=[*pipeline.consumers, counter])
    t0 = time.perf_counter()
    try:
        service.start(wait_subscribed_s=15)
        go.set()
        if not receive.poll(1800):
            raise RuntimeError("the publisher sent nothing in 30 min")
        published, sim.faults = receive.recv()
        publisher.join(30)
        deadline = time.monotonic() + 600
        while counter.readings < published and time.monotonic() < deadline:
            time.sleep(0.2)
        if counter.readings < published:
            raise RuntimeError(f"pipeline saw {counter.readings} of {published} readings")
    finally:
        if publisher.is_alive():
            publisher.kill()
        stop_all(service, pipeline, broker)
    elapsed = time.perf_counter() - t0
    rules = {r.name for r in anomaly_rules().values()}
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT rule, device_id, fired_at FROM alerts WHERE fired_at IS NOT NULL "
            "AND rule = ANY(%s)",
            (list(rules),),
        ).fetchall()
    return (
        [FiredAlert(rule=r, device_id=d, group=None, fired_at=f) for r, d, f in rows],
        (published),
        elapsed,
    )


def baseline_alerts(dsn: str, settings: StreamSettings) -> list[FiredAlert]:
    """The plain long-window Gaussian z-score over the stored readings, with episodes."""
    rules = anomaly_rules()
    alpha = 1.0 / settings.anomaly_memory
    out: list[FiredAlert] = []
    with psycopg.connect(dsn) as conn:
        for kind in KINDS:
            field = catalog.ANOMALY_FIELD[kind]
            rows = conn.execute(
                f"SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint, {field} "
                f"FROM {kind.value}_readings WHERE {field} IS NOT NULL ORDER BY device_id, ts"
            ).fetchall()
            state: dict[str, list[float]] = {}
            for device_id, t, x in rows:
                st = state.setdefault(device_id, [0.0, 0.0, 0.0, -1.0, math.nan])
                mean, var, n, firing_since, calm_since = st
                if n >= settings.anomaly_warmup:
                    z = abs(x - mean) / math.sqrt(var + 1e-9)
                    if z >= FIRE:
                        if firing_since < 0:
                            out.append(
                                FiredAlert(
                                    rule=rules[kind].name,
                                    device_id=device_id,
                                    group=None,
                                    fired_at=datetime.fromtimestamp(t / 1000, UTC),
                                )
                            )
                            firing_since = t
                        calm_since = math.nan
                    elif firing_since >= 0:
                        if z < CLEAR:
                            calm_since = t if math.isnan(calm_since) else calm_since
                            if t - calm_since >= HOLD_MS:
                                firing_since, calm_since = -1.0, math.nan
                        else:
                            calm_since = math.nan
                a = max(1.0 / (n + 1), alpha)
                diff = x - mean
                mean += a * diff
                var = (1 - a) * (var + a * diff * diff)
                state[device_id] = [mean, var, n + 1, firing_since, calm_since]
    return out


def truth(sim: Simulation) -> list[tuple[Kind, TruthFault]]:
    """The injected shape faults as scoring truth; a fault whose shape reached no reading is
    not detectable by anyone."""
    out = []
    for f in sim.faults:
        if f.fault_type not in SHAPES:
            continue
        out.append(
            (
                f.kind,
                TruthFault(
                    fault_id=f.fault_id,
                    fault_type=f.fault_type.value,
                    device_ids=frozenset(f.device_ids),
                    group_id=None,
                    start=datetime.fromtimestamp(f.start_ms / 1000, UTC),
                    end=datetime.fromtimestamp(f.end_ms / 1000, UTC),
                    detectable=int(f.params.get("readings", 0)) > 0,
                ),
            )
        )
    return out


def score_table(
    sim: Simulation, faults: list[tuple[Kind, TruthFault]], fired: Iterable[FiredAlert]
) -> dict[str, Any]:
    """Per kind and shape: precision, recall, delay; false alerts per 1,000 healthy sensor-days."""
    return score_anomalies(
        [(k.value, f) for k, f in faults],
        list(fired),
        sensors={
            k.value: [str(d) for d in sim.scenario.tables[k].device_id.tolist()] for k in KINDS
        },
        days=(sim.end_ms - sim.start_ms) / 86_400_000,
        rules={k.value: anomaly_rules()[k].name for k in KINDS},
    )


def detector_cost(n_readings: int = 1_000_000, n_sensors: int = 10_000) -> dict[str, float]:
    """ns per reading of the detector on a batch of room readings (numba warm)."""
    rng = np.random.default_rng(1)
    dev = rng.integers(0, n_sensors, n_readings).astype(np.int64)
    ts = np.sort(rng.integers(0, 30 * 86_400_000, n_readings)).astype(np.int64) + 1_764_547_200_000
    val = np.round(21 + rng.normal(0, 0.3, n_readings), 1)
    settings = StreamSettings()
    warm = SensorState(Kind.HEATING, n_sensors, settings)
    warm.update(dev[:1000], ts[:1000], val[:1000])  # compile / load the cache
    best = math.inf
    best_with_order = math.inf
    for _ in range(3):
        state = SensorState(Kind.HEATING, n_sensors, settings)
        t0 = time.perf_counter()
        order = kernels.device_time_order(dev, ts, n_sensors)
        slots = state.slots_of(ts, {})
        t1 = time.perf_counter()
        state.update(dev, ts, val, order=order, slots=slots)
        t2 = time.perf_counter()
        best = min(best, t2 - t1)
        best_with_order = min(best_with_order, t2 - t0)
    return {
        "ns_per_reading": round(best / n_readings * 1e9, 1),
        "ns_per_reading_with_order": round(best_with_order / n_readings * 1e9, 1),
        "detector_bytes_per_sensor": SensorState(Kind.HEATING, 1, settings).nbytes,
    }


def main() -> None:
    """Run the benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under two minutes")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    quiet_logs()
    devices, days, rate = SIZES["quick" if args.quick else "full"]
    t_start = time.perf_counter()
    sim = build_sim(devices, days, args.seed, rate)
    workdir = Path(tempfile.mkdtemp(prefix="cityops-bench-anomaly-"))
    with scratch_db(admin_dsn()) as dsn:
        with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
            report = registry.import_devices(conn, scenario.registry_records(sim.scenario), "bench")
            if report.errors:
                raise RuntimeError(f"registry import failed: {report.errors[:3]}")
        log(
            f"replaying {sum(devices)} devices (lamps, rooms, piles: {devices}) over {days} days"
            " through broker, ingest, stream, alerts"
        )
        fired, readings, elapsed = run_product(dsn, sim, workdir)
        log(f"{readings} readings in {elapsed:.0f} s; {len(fired)} anomaly alerts; baseline next")
        base = baseline_alerts(dsn, StreamSettings())
    faults = truth(sim)
    product = score_table(sim, faults, fired)
    baseline = score_table(sim, faults, base)
    ahead = {
        key: {
            "recall": (v["recall"] or 0) - (baseline["per_shape"][key]["recall"] or 0),
            "precision": (v["precision"] or 0) - (baseline["per_shape"][key]["precision"] or 0),
        }
        for key, v in product["per_shape"].items()
    }
    result = {
        "benchmark": "anomaly",
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "devices": dict(zip(("lamps", "rooms", "charging_piles"), devices, strict=True)),
        "days": days,
        "readings": readings,
        "replay_s": round(elapsed, 1),
        "shape_faults": len(faults),
        **product,
        "baseline": baseline,
        "ahead_of_baseline": ahead,
        **detector_cost(),
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()

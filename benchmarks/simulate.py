"""Simulator benchmark: 1,000,000-device registry generation and sustained MQTT publish rate.

The publish rate is measured against a private mosquitto started here, next to a baseline in the
same run: a bare paho-mqtt QoS 1 publish loop of the same number of messages and payload size.
Prints one JSON object. ``--quick`` finishes in well under two minutes on two cores.

    python benchmarks/simulate.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityops.ports import free_port
from simulators import runner, scenario
from simulators.engine import Simulation
from simulators.messages import encode
from simulators.publisher import Publisher, PublisherConfig

BROKER_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
max_inflight_messages 1000
{user}
"""


def _start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    user = "user root" if os.geteuid() == 0 else ""
    conf.write_text(BROKER_CONF.format(port=port, user=user), encoding="utf-8")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)  # noqa: S603
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def bench_registry(devices: int, workdir: Path) -> dict[str, float]:
    """Generate the city scenario and stream its CSV to a file."""
    t0 = time.perf_counter()
    scn = scenario.generate(scenario.scenario_spec("city", devices), seed=1)
    t1 = time.perf_counter()
    path = workdir / "city.csv"
    rows = scenario.write_csv_file(scn, path)
    t2 = time.perf_counter()
    size = path.stat().st_size
    path.unlink()
    return {
        "devices": rows,
        "generate_s": round(t1 - t0, 3),
        "write_csv_s": round(t2 - t1, 3),
        "total_s": round(t2 - t0, 3),
        "csv_mb": round(size / 1e6, 1),
    }


def bench_baseline(port: int, n: int, payload_size: int) -> dict[str, float]:
    """A bare paho publish loop: QoS 1, one topic per device, wait for every PUBACK."""
    acked = 0
    done = threading.Event()

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1
        if acked >= n:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline")
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    payload = b"x" * payload_size
    t0 = time.perf_counter()
    for i in range(n):
        client.publish(f"bench/v1/heating/ht-{i % 5000:05d}/telemetry", payload, qos=1)
    done.wait(300)
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return {"messages": n, "seconds": round(elapsed, 3), "msgs_per_s": round(n / elapsed)}


def bench_simulator(port: int, scn: scenario.Scenario, minutes: int) -> dict[str, float]:
    """The district simulation published as fast as possible (speed 0) through the Publisher."""
    start = datetime(2025, 12, 10, 9, tzinfo=UTC)
    sim = Simulation(scn, start=start, duration=timedelta(minutes=minutes), fault_rate=0.02)
    publisher = Publisher(
        PublisherConfig(port=port, prefix="bench/v1", client_id="bench-sim", max_pending=20_000)
    )
    publisher.connect()
    t0 = time.perf_counter()
    progress = runner.run(sim, runner.MqttSink(publisher), speed=0, prefix="bench/v1")
    publisher.flush(300)
    elapsed = time.perf_counter() - t0
    acked = publisher.stats.acked
    mean_payload = publisher.stats.bytes / max(1, publisher.stats.published)
    publisher.close()
    return {
        "devices": scn.total,
        "simulated_minutes": minutes,
        "messages": progress.messages,
        "acked": acked,
        "readings": progress.readings,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(acked / elapsed),
        "readings_per_s": round(progress.readings / elapsed),
        "mean_payload_bytes": round(mean_payload),
        "sim_speedup": round(minutes * 60 / elapsed, 1),
    }


def bench_generate_only(scn: scenario.Scenario, minutes: int) -> dict[str, float]:
    """The same run without the network: models, faults and encoding only."""
    start = datetime(2025, 12, 10, 9, tzinfo=UTC)
    sim = Simulation(scn, start=start, duration=timedelta(minutes=minutes), fault_rate=0.02)
    t0 = time.perf_counter()
    messages = sum(1 for out in sim.ticks() for _ in encode(out, "bench/v1"))
    elapsed = time.perf_counter() - t0
    return {
        "messages": messages,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(messages / elapsed),
    }


def main() -> None:
    """Run the benchmark and print one JSON object."""
    from cityops import logging as cityops_logging
    from cityops.settings import LogSettings

    # Logs go to stderr: stdout carries only the one JSON object.
    cityops_logging.configure(LogSettings(level="warning"))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller publish run (< 2 min)")
    parser.add_argument("--registry-devices", type=int, default=1_000_000)
    args = parser.parse_args()
    minutes = 10 if args.quick else 60
    district_devices = 20_000 if args.quick else None
    with tempfile.TemporaryDirectory(prefix="cityops-bench-") as tmp:
        workdir = Path(tmp)
        result: dict[str, object] = {
            "benchmark": "simulate",
            "quick": args.quick,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        }
        result["registry"] = bench_registry(args.registry_devices, workdir)
        scn = scenario.generate(scenario.scenario_spec("district", district_devices), seed=2)
        result["generate_only"] = bench_generate_only(scn, minutes)
        proc, port = _start_broker(workdir)
        try:
            sim = bench_simulator(port, scn, minutes)
            baseline = bench_baseline(port, int(sim["messages"]), int(sim["mean_payload_bytes"]))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        result["publish"] = sim
        result["baseline_bare_paho"] = baseline
        result["publish_vs_baseline"] = round(sim["msgs_per_s"] / baseline["msgs_per_s"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

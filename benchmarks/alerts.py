"""Alerts benchmark: publish -> alert latency, rule-evaluation cost and alert quality.

Creates its own databases on the server named by CITYOPS_BENCH_DSN (else CITYOPS_TEST_DSN, else
postgresql://postgres@127.0.0.1:5432/postgres) and starts its own mosquitto (the plain test
config). Prints one JSON object:

- ``latency_p50_ms`` / ``latency_p99_ms``: publish of the reading that triggers a state alert
  (cover open, charger Faulted: no ``for``, they fire at once) -> arrival of the alert message on
  ``cityops/v1/alerts/...``, through the real pipeline (mosquitto, IngestService, stream and
  alert engine from ``build_pipeline``, the default routes with ``group_wait`` 0 s) while a
  background load of gateway batches keeps ingest at ``load_readings_per_s`` (10,000/s);
  ``latency_breakdown`` splits it at the commit and after the pipeline's consumers;
- ``eval_ms_per_10k_readings``: ``AlertEngine.process_batch`` with the default rules on
  committed batches of 1,000 simulated pilot readings (night hours), per 10,000 readings; the
  baseline ``baseline_build_ms_per_10k_readings`` is building those batches from the decoded
  readings (``KindBatch.from_rows``), measured in the same run; ``replay_*`` are the same costs
  in the ground-truth replay (one batch per simulated minute, with the alert transitions);
- ``precision_min`` / ``recall_min`` / ``per_fault``: the ground-truth run (``replay``): a
  simulated pilot day with injected faults fed to an engine in simulated time, scored with
  ``alerts.quality.score`` (see docs/alerts.md, "Alert quality"); ``member_holds``: what became
  of the member alerts the engine held while their group might form (``hold_members``);
- ``nodata_tick``: one tick of the no-data rule over a registry of ``devices`` (1,000,000; 100,000
  with ``--quick``) heard at their usual pace, 0.1 % of them silent: ``watch_ms`` with the
  engine's deadline watch (``alerts.silence``), ``scan_ms`` the former scan of every device
  (the baseline, in the same run), both finding the same silent devices (``same``);
- ``storm_store``: storing an alert storm's transitions (``transitions`` no-data alerts going
  pending, then firing) with ``alerts.store.apply_transitions`` (one statement per transition,
  runs sent together): ``ms_per_1000``, against the former two round trips per transition
  (``baseline_ms_per_1000``) on the same database in the same run.

    .venv/bin/python benchmarks/alerts.py [--quick] [--latency-only | --skip-latency]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402
from psycopg_pool import ConnectionPool  # noqa: E402

from alerts import store  # noqa: E402
from alerts.directory import DeviceDirectory, DeviceInfo  # noqa: E402
from alerts.engine import AlertEngine  # noqa: E402
from alerts.lifecycle import AlertState, Event, OpenAlert, Transition  # noqa: E402
from alerts.quality import (  # noqa: E402
    EXPECTED_RULE,
    FiredAlert,
    TruthFault,
    TypeScore,
    score,
    score_anomalies,
)
from alerts.rules import (  # noqa: E402
    GroupRule,
    NoDataRule,
    RuleHolder,
    RuleSet,
    ThresholdRule,
)
from alerts.silence import SilenceWatch, allowed_silence  # noqa: E402
from cityops import catalog, registry  # noqa: E402
from cityops.batch import CommittedBatch, KindBatch, StatusChange  # noqa: E402
from cityops.catalog import Kind  # noqa: E402
from cityops.db import migrate  # noqa: E402
from cityops.ports import free_port  # noqa: E402
from cityops.schedule import HeatingCalendar, LightingSchedule  # noqa: E402
from cityops.settings import (  # noqa: E402
    DatabaseSettings,
    ScheduleSettings,
    Settings,
    StorageSettings,
)
from simulators import messages, scenario  # noqa: E402
from simulators.engine import Simulation, TickOutput  # noqa: E402
from simulators.shapes import SHAPES  # noqa: E402
from stream.live import LiveRates  # noqa: E402

# A December day from 08:00 Beijing time: daylight, then a whole night, in the heating season.
DAY_START = datetime(2025, 12, 10, 0, tzinfo=UTC)
GROUP_ATTRS = ("cabinet_id", "site_id", "compound")


def admin_dsn() -> str:
    """The server the benchmark creates its databases on."""
    return os.environ.get(
        "CITYOPS_BENCH_DSN",
        os.environ.get("CITYOPS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )


def _with_db(dsn: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(dsn)
    parts["dbname"] = name
    return make_conninfo(**{k: v for k, v in parts.items() if v is not None})


@contextmanager
def scratch_db(admin: str) -> Iterator[str]:
    """A freshly migrated database with the reference areas, dropped afterwards."""
    name = f"cityops_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_db(admin, name)
    try:
        with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:
            migrate.migrate(conn, StorageSettings(timescaledb="off"))
        with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
            registry.import_areas(conn, registry.reference_area_records(), "reference")
        yield dsn
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- decoding the simulated stream into committed batches ----------------------------------


def _ts_ms(value: int | str) -> int:
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


_KIND_OF_PREFIX = {
    "sl": Kind.STREETLIGHT,
    "mh": Kind.MANHOLE,
    "ht": Kind.HEATING,
    "ch": Kind.CHARGER,
}


def decode_tick(out: TickOutput, seq: int, prefix: str = "cityops/v1") -> CommittedBatch:
    """One tick's MQTT messages (``simulators.messages.encode``) as a committed batch.

    Decoded by the MQTT contract (topics and JSON payloads, ``ts`` as epoch ms or RFC 3339); a
    reading's receive time is its own ``ts`` (the device sent it then), so the engine's no-data
    evaluation runs in simulated receive time. Complaints are left out: the scored rules do not
    read them.
    """
    rows: dict[Kind, list[tuple[str, int, int, Mapping[str, Any]]]] = {}
    statuses: list[StatusChange] = []
    for m in messages.encode(out, prefix):
        kind_s, ident, leaf = m.topic[len(prefix) + 1 :].split("/")
        if kind_s == "hotline":
            continue
        body = orjson.loads(m.payload)
        if leaf == "status":
            statuses.append(
                StatusChange(
                    device_id=ident,
                    kind=Kind(kind_s),
                    online=bool(body["online"]),
                    ts=datetime.fromtimestamp(int(body.get("ts") or out.t_ms) / 1000, UTC),
                )
            )
            continue
        if kind_s == "gateway":
            items = [(d, item) for d, its in body.items() for item in its]
        else:
            items = [(ident, item) for item in (body if isinstance(body, list) else [body])]
        for device_id, item in items:
            kind = _KIND_OF_PREFIX[device_id.split("-", 1)[0]]
            ts = _ts_ms(item["ts"])
            values = catalog.KINDS[kind].validate_values(item["values"])
            rows.setdefault(kind, []).append((device_id, ts, ts, values))
    return CommittedBatch(
        seq=seq,
        committed_at=datetime.fromtimestamp((out.t_ms + 60_000) / 1000, UTC),
        readings={k: KindBatch.from_rows(k, r) for k, r in rows.items()},
        status_changes=statuses,
    )


# --- the ground-truth run ----------------------------------------------------------------


@dataclass
class SimClock:
    """The engine's clock, moved by the replay to simulated time."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass(kw_only=True)
class GroundTruthRun:
    """What a replay produced: the truth, the fired alerts, their scores and the costs."""

    faults: list[TruthFault]
    fired: list[FiredAlert]
    scores: dict[str, TypeScore]
    readings: int
    eval_s: float = 0.0
    decode_s: float = 0.0
    holds: dict[str, int] = field(default_factory=dict)  # AlertEngine.hold_counts
    anomalies: dict[str, Any] = field(default_factory=dict)  # quality.score_anomalies


def _effect_end(sim: Simulation, params: Mapping[str, Any]) -> datetime | None:
    """A fault's recorded effect end (None: it ended with the fault); the run's end if unended."""
    if "effect_end_ms" not in params:
        return None
    ms = params["effect_end_ms"]
    return datetime.fromtimestamp((sim.end_ms if ms is None else int(ms)) / 1000, UTC)


def truth_of(sim: Simulation) -> list[TruthFault]:
    """The simulation's injected faults as ``alerts.quality`` ground truth (after the run)."""
    return [
        TruthFault(
            fault_id=f.fault_id,
            fault_type=f.fault_type.value,
            device_ids=frozenset(f.device_ids),
            group_id=f.group_id,
            start=datetime.fromtimestamp(f.start_ms / 1000, UTC),
            end=datetime.fromtimestamp(f.end_ms / 1000, UTC),
            effect_end=_effect_end(sim, f.params),
        )
        for f in sim.faults
    ]


# Fault types whose signature builds up slowly (rooms cool over hours): such a fault is detectable
# only if the stream shows its rule's condition for the rule's ``for`` while the fault or its
# effect lasts (a repaired room stays cold for hours; the simulation records when it recovers).
# Every other fault is detectable if it outlasts its rule's ``for`` by more than one tick.
SLOW_FAULTS = ("cold_room", "supply_failure")
# Shapes start once every detector has warmed up (a room's takes 25 h: every hour seen once).
SHAPES_AFTER = timedelta(hours=26)
# Anomaly shapes are scored per kind by quality.score_anomalies (the run's ``anomalies``); the
# heating flatline is both an old fault type and a shape: only the shape-planned ones count there.
SHAPE_TYPES = frozenset(t.value for t in SHAPES) - {"flatline"}
TICK = timedelta(minutes=1)


def _detectable(
    f: TruthFault, rules: RuleSet, series: Mapping[str, list[tuple[int, float]]]
) -> bool:
    """Whether the shipped rule could catch ``f`` at all (see alerts/quality.py)."""
    if f.fault_type not in EXPECTED_RULE:
        return True
    rule = rules.by_name(EXPECTED_RULE[f.fault_type])
    start, end = int(f.start.timestamp() * 1000), int(f.span_end.timestamp() * 1000)
    if f.fault_type in SLOW_FAULTS and isinstance(rule, GroupRule):
        member = rules.by_name(rule.member_rule)
        if isinstance(member, ThresholdRule):
            held = sum(_condition_held(member, series.get(d, []), start, end) for d in f.device_ids)
            return held >= rule.min_members and held >= rule.min_fraction * len(f.device_ids)
    if f.fault_type in SLOW_FAULTS and isinstance(rule, ThresholdRule):
        return any(_condition_held(rule, series.get(d, []), start, end) for d in f.device_ids)
    return f.end - f.start > rule.for_ + TICK


def _condition_held(
    rule: ThresholdRule, series: list[tuple[int, float]], start: int, end: int
) -> bool:
    """Whether readings in [start, end) breach ``rule`` without clearing for at least ``for``."""
    since: int | None = None
    for ts, x in series:
        if not start <= ts < end:
            continue
        if rule.breached(x):
            since = ts if since is None else since
            if ts - since >= rule.for_.total_seconds() * 1000:
                return True
        elif rule.cleared(x):
            since = None
    return False


def fired_alerts(conn: psycopg.Connection[Any]) -> list[FiredAlert]:
    """Every alert that fired and was not inhibited (what the duty staff was told about)."""
    rows = conn.execute(
        "SELECT rule, device_id, labels, fired_at FROM alerts "
        "WHERE fired_at IS NOT NULL AND inhibited_by IS NULL"
    ).fetchall()
    return [
        FiredAlert(
            rule=r,
            device_id=d,
            group=next((str(labels[a]) for a in GROUP_ATTRS if a in (labels or {})), None),
            fired_at=f,
        )
        for r, d, labels, f in rows
    ]


def _watch(batch: CommittedBatch, series: dict[str, list[tuple[int, float]]]) -> None:
    """Keep the watched rooms' temperatures (for the detectability of slow faults)."""
    kb = batch.readings.get(Kind.HEATING)
    if kb is None or not series:
        return
    temps = kb.columns["temperature_c"]
    for i, device_id in enumerate(kb.device_ids):
        if device_id in series and not np.isnan(temps[i]):
            series[device_id].append((int(kb.ts_ms[i]), float(temps[i])))


def replay(
    dsn: str,
    *,
    devices: int,
    seed: int,
    fault_rate: float,
    start: datetime = DAY_START,
    duration: timedelta = timedelta(days=1),
    shape_rate: float = 0.0,
) -> GroundTruthRun:
    """Run a simulated pilot with faults through an alert engine in simulated time; score it.

    ``dsn`` is a migrated database with the reference areas and no devices. Each tick's messages
    become one committed batch fed to ``process_batch`` with the engine's clock at the tick's end,
    then ``tick`` runs at that time, so ``for`` durations and no-data follow simulated time.
    """
    sim = Simulation(
        scenario.generate(scenario.scenario_spec("pilot", devices=devices), seed=seed),
        start=start,
        duration=duration,
        fault_rate=fault_rate,
        shape_rate=shape_rate,
        shape_after=SHAPES_AFTER,
    )
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        report = registry.import_devices(conn, scenario.registry_records(sim.scenario), "bench")
        if report.errors:
            raise RuntimeError(f"registry import failed: {report.errors[:3]}")
    clock = SimClock(now=start)
    settings = ScheduleSettings()
    pool = ConnectionPool(
        dsn, min_size=1, max_size=2, open=True, kwargs={"options": "-c TimeZone=UTC"}
    )
    rules = RuleHolder()
    # The stream core runs before the engine, as in `cityops ingest`: it scores every reading
    # for the anomaly rules (and keeps the rates the aggregate rules read).
    live_conn = psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC")
    live = LiveRates.from_db(Settings(db=DatabaseSettings(dsn=dsn)), live_conn)
    watched = {d for f in sim.faults if f.fault_type.value in SLOW_FAULTS for d in f.device_ids}
    series: dict[str, list[tuple[int, float]]] = {d: [] for d in watched}
    readings = 0
    eval_s = 0.0
    decode_s = 0.0
    try:
        engine = AlertEngine(
            rules=rules,
            pool=pool,
            schedule=LightingSchedule(settings),
            calendar=HeatingCalendar(settings),
            clock=clock,
        )
        for seq, out in enumerate(sim.ticks(), start=1):
            t0 = time.perf_counter()
            batch = decode_tick(out, seq)
            decode_s += time.perf_counter() - t0
            _watch(batch, series)
            readings += batch.reading_count
            clock.now = batch.committed_at
            live.on_batch(batch)
            t0 = time.perf_counter()
            engine.process_batch(batch)
            eval_s += time.perf_counter() - t0
            engine.tick(clock.now)
        with pool.connection() as conn:
            fired = fired_alerts(conn)
        holds = dict(engine.hold_counts)
    finally:
        pool.close()
        live_conn.close()
    truth = truth_of(sim)
    faults = [
        replace(f, detectable=_detectable(f, rules.rules, series))
        for f in truth
        if f.fault_type not in SHAPE_TYPES
    ]
    shape_faults = [
        (
            sim.faults[i].kind.value,
            replace(f, detectable=int(sim.faults[i].params.get("readings", 0)) > 0),
        )
        for i, f in enumerate(truth)
        if "shape" in sim.faults[i].params
    ]
    return GroundTruthRun(
        faults=faults,
        fired=fired,
        scores=score(faults, fired),
        anomalies=score_anomalies(
            shape_faults,
            fired,
            sensors={
                k.value: [str(d) for d in t.device_id.tolist()]
                for k, t in sim.scenario.tables.items()
            },
            days=duration.total_seconds() / 86_400,
        ),
        readings=readings,
        eval_s=eval_s,
        decode_s=decode_s,
        holds=holds,
    )


# --- rule-evaluation cost --------------------------------------------------------------------


def eval_cost(admin: str, *, hours: float, batch_rows: int = 1_000) -> dict[str, Any]:
    """``process_batch`` with the default rules on the full pilot's readings, per 10k readings.

    The simulated readings (night, so lamps are due on and schedule rules do work) are decoded
    once, then re-cut in time order into batches of ``batch_rows`` readings, about what ingest
    commits per 50 ms window at 10,000 readings/s. Baseline: building the same batches from the
    decoded rows (``KindBatch.from_rows``), timed in the same run.
    """
    start = DAY_START + timedelta(hours=12)  # 20:00 Beijing time
    sim = Simulation(
        scenario.generate(scenario.scenario_spec("pilot"), seed=3),
        start=start,
        duration=timedelta(hours=hours),
        fault_rate=0.02,
    )
    rows: list[tuple[Kind, tuple[str, int, int, Mapping[str, Any]]]] = []
    statuses: list[StatusChange] = []
    for seq, out in enumerate(sim.ticks(), start=1):
        b = decode_tick(out, seq)
        statuses += b.status_changes
        for kind, kb in b.readings.items():
            spec = catalog.KINDS[kind]
            for i in range(len(kb)):
                values = {f.name: kb.decode(f.name, i) for f in spec.readings}
                rows.append(
                    (kind, (str(kb.device_ids[i]), int(kb.ts_ms[i]), int(kb.ts_ms[i]), values))
                )
    rows.sort(key=lambda r: r[1][1])
    with scratch_db(admin) as dsn:
        with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
            registry.import_devices(conn, scenario.registry_records(sim.scenario), "bench")
        clock = SimClock(now=start)
        settings = ScheduleSettings()
        pool = ConnectionPool(
            dsn, min_size=1, max_size=2, open=True, kwargs={"options": "-c TimeZone=UTC"}
        )
        try:
            engine = AlertEngine(
                rules=RuleHolder(),
                pool=pool,
                schedule=LightingSchedule(settings),
                calendar=HeatingCalendar(settings),
                clock=clock,
            )
            engine.process_batch(CommittedBatch(seq=0, committed_at=start, status_changes=statuses))
            build_s = 0.0
            eval_s = 0.0
            for k in range(0, len(rows), batch_rows):
                chunk = rows[k : k + batch_rows]
                t0 = time.perf_counter()
                by_kind: dict[Kind, list[tuple[str, int, int, Mapping[str, Any]]]] = {}
                for kind, row in chunk:
                    by_kind.setdefault(kind, []).append(row)
                batch = CommittedBatch(
                    seq=k + 1,
                    committed_at=datetime.fromtimestamp(chunk[-1][1][1] / 1000, UTC),
                    readings={kd: KindBatch.from_rows(kd, r) for kd, r in by_kind.items()},
                )
                t1 = time.perf_counter()
                clock.now = batch.committed_at
                engine.process_batch(batch)
                t2 = time.perf_counter()
                build_s += t1 - t0
                eval_s += t2 - t1
        finally:
            pool.close()
    per_10k = 10_000 / max(len(rows), 1) * 1000
    return {
        "eval_ms_per_10k_readings": round(eval_s * per_10k, 1),
        "baseline_build_ms_per_10k_readings": round(build_s * per_10k, 1),
        "eval_readings": len(rows),
        "eval_batch_rows": batch_rows,
    }


# --- publish -> alert on MQTT latency ---------------------------------------------------------

BROKER_CONF = """\
user root
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
"""
LOAD_GATEWAYS = 10
LOAD_PER_GATEWAY = 100  # readings per gateway message
HEADER = (
    "device_id,kind,area_code,lat,lon,gateway_id,schedule_class,cabinet_id,owner_unit,compound,"
    "heat_company,site_id,public\n"
)


# The former store's statements, one per transition, each followed by its event row
# (store.EVENT_SQL): the baseline of ``storm_store``.
_BASELINE_INSERT_SQL = """
INSERT INTO alerts (fingerprint, rule, kind, severity, labels, summary, state, device_id,
                    area_code, started_at, last_seen, last_value)
VALUES (%(fingerprint)s, %(rule)s, %(kind)s, %(severity)s, %(labels)s, %(summary)s, 'pending',
        %(device_id)s, %(area_code)s, %(at)s, %(at)s, %(value)s)
RETURNING id
"""

_BASELINE_FIRE_SQL = """
UPDATE alerts SET state = 'firing', fired_at = %(at)s, last_seen = %(at)s, last_value = %(value)s,
                  summary = %(summary)s
WHERE fingerprint = %(fingerprint)s AND state <> 'resolved'
RETURNING id, started_at
"""


def _storm(n: int, tag: str, at: datetime) -> list[Transition]:
    alerts = [
        OpenAlert(
            fingerprint=f"{tag}-{i}", rule="device_silent",
            labels={"device_id": f"{tag}{i:07d}", "kind": "heating", "area_code": "CY-JW"},
            state=AlertState.PENDING, since=at, last_seen=at, last_value="silent 3600 s",
        )
        for i in range(n)
    ]  # fmt: skip
    pending = [Transition(event=Event.PENDING, alert=a, at=at) for a in alerts]
    firing = [Transition(event=Event.FIRING, alert=a, at=at) for a in alerts]
    return pending + firing


def storm_store(admin: str, n: int) -> dict[str, Any]:
    """Store ``n`` alerts going pending then firing: the store against its former loop."""
    rules = RuleHolder().rules
    at = datetime(2026, 12, 1, tzinfo=UTC)
    with scratch_db(admin) as dsn, psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur:  # the former store: two round trips per transition
            for t in _storm(n, "B", at):
                params = {
                    "fingerprint": t.alert.fingerprint, "rule": t.alert.rule, "kind": "heating",
                    "severity": "warning", "labels": Jsonb(t.alert.labels), "summary": "s",
                    "device_id": t.alert.labels["device_id"], "area_code": "CY-JW", "at": t.at,
                    "value": str(t.alert.last_value), "cancelled": False,
                }  # fmt: skip
                sql_of = _BASELINE_INSERT_SQL if t.event is Event.PENDING else _BASELINE_FIRE_SQL
                row = cur.execute(sql_of, params).fetchone()
                assert row is not None
                detail = Jsonb({"value": params["value"]})
                cur.execute(store.EVENT_SQL, (row[0], t.at, t.event.value, "cityops", detail))
        conn.commit()
        t1 = time.perf_counter()
        notices = store.apply_transitions(conn, _storm(n, "N", at), rules)
        conn.commit()
        t2 = time.perf_counter()
        events = conn.execute("SELECT count(*) FROM alert_events").fetchone()
    return {
        "transitions": 2 * n,
        "ms_per_1000": round((t2 - t1) * 1000 / (2 * n) * 1000, 1),
        "baseline_ms_per_1000": round((t1 - t0) * 1000 / (2 * n) * 1000, 1),
        "notices": len(notices),
        "events_stored": events[0] if events else 0,
    }


def _nodata_scan(
    rule: NoDataRule,
    directory: DeviceDirectory,
    last_heard: Mapping[str, datetime],
    started_at: datetime,
    now: datetime,
) -> list[tuple[str, timedelta]]:
    """The alert engine's former no-data evaluation: every registered device, every tick."""
    out = []
    for info in directory.devices.values():
        if not info.in_service or rule.kind not in (None, info.kind):
            continue
        silent = now - last_heard.get(info.device_id, started_at)
        if silent > allowed_silence(rule, info):
            out.append((info.device_id, silent))
    return out


def nodata_tick(devices: int, ticks: int = 12) -> dict[str, Any]:
    """Cost of one 5-second tick of the default no-data rule: deadline watch against scan."""
    rng = np.random.default_rng(5)
    kinds = (Kind.STREETLIGHT, Kind.HEATING, Kind.CHARGER, Kind.MANHOLE)
    infos = [
        DeviceInfo(
            device_id=f"d{i:07d}", kind=kinds[i % 4], area_code="A", in_service=True,
            lat=None, lon=None, attributes={},
        )
        for i in range(devices)
    ]  # fmt: skip
    directory = DeviceDirectory(infos)
    rule = NoDataRule(name="device_silent", type="nodata")
    start = datetime(2026, 12, 1, tzinfo=UTC)
    now = start + timedelta(hours=6)
    last_heard: dict[str, datetime] = {}
    for info in infos:  # each heard within its allowed silence; one in a thousand not for long
        limit = allowed_silence(rule, info).total_seconds()
        ago = limit * (1.5 if rng.random() < 0.001 else float(rng.random()) * 0.9)
        last_heard[info.device_id] = now - timedelta(seconds=ago)
    watch = SilenceWatch(rule, directory, last_heard, start)
    watch_ms, scan_ms, same = [], [], True
    for k in range(ticks):
        at = now + timedelta(seconds=5 * k)
        t0 = time.perf_counter()
        got = [(i.device_id, s) for i, s in watch.silent(at, directory, last_heard)]
        t1 = time.perf_counter()
        expect = _nodata_scan(rule, directory, last_heard, start, at)
        t2 = time.perf_counter()
        same &= sorted(got) == sorted(expect)
        watch_ms.append((t1 - t0) * 1000)
        scan_ms.append((t2 - t1) * 1000)
    return {
        "devices": devices,
        "silent": len(expect),
        "watch_ms": round(statistics.median(watch_ms[1:]), 2),
        "watch_first_ms": round(watch_ms[0], 2),
        "scan_ms": round(statistics.median(scan_ms), 2),
        "same": same,
    }


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A private plain mosquitto; waits until it accepts connections."""
    import socket

    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(BROKER_CONF.format(port=port))
    proc = subprocess.Popen(  # noqa: S603 - fixed binary, our own config
        ["/usr/sbin/mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise RuntimeError("mosquitto did not start")


def trigger_devices(n: int, areas: list[str]) -> list[tuple[str, str, str]]:
    """(kind, device_id, area): covers and connectors alternately, spread over the areas."""
    out = []
    for i in range(n):
        kind = "manhole" if i % 2 == 0 else "charger"
        out.append((kind, f"{'mh' if kind == 'manhole' else 'ch'}-t{i:05d}", areas[i % len(areas)]))
    return out


def latency_registry(areas: list[str], triggers: list[tuple[str, str, str]]) -> str:
    """Registry CSV: the load's rooms behind gateways and the trigger devices."""
    lines = [HEADER]
    for g in range(LOAD_GATEWAYS):
        for d in range(LOAD_PER_GATEWAY):
            area = areas[(g * LOAD_PER_GATEWAY + d) % len(areas)]
            lines.append(
                f"ht-l{g:02d}{d:03d},heating,{area},39.90,116.45,gw-l{g:02d},,,,"
                f"小区{g},热力集团,,\n"
            )
    for kind, device_id, area in triggers:
        if kind == "manhole":
            lines.append(f"{device_id},manhole,{area},39.91,116.46,,,,telecom,,,,\n")
        else:
            lines.append(f"{device_id},charger,{area},39.92,116.47,,,,,,,site-{device_id},true\n")
    return "".join(lines)


def load_and_trigger(  # noqa: PLR0915 - one linear publishing loop
    port: int, rate: float, seconds: float, triggers_per_s: float
) -> None:
    """Subprocess: publish the load and the triggers, time the alerts; print JSON latencies.

    The load is gateway batches of ``LOAD_PER_GATEWAY`` room readings at ``rate`` readings/s;
    every ``1 / triggers_per_s`` s one trigger device reports its fault (cover open or
    Faulted). A subscriber on ``cityops/v1/alerts/#`` notes when each device's firing alert
    arrives; latency is arrival minus the trigger's publish time (same machine, same clock).
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    n_trig = int(seconds * triggers_per_s)
    triggers = trigger_devices(n_trig, json.loads(sys.stdin.read()))
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, m: Any) -> None:
        now = time.time()
        body = orjson.loads(m.payload)
        with lock:
            for a in body.get("alerts", []):
                device = (a.get("labels") or {}).get("device_id")
                if device and a.get("state") == "firing" and device not in arrived:
                    arrived[device] = now

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex[:6]}")
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("cityops/v1/alerts/#", qos=1)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(0.5)
    msg_rate = rate / LOAD_PER_GATEWAY
    t_start = time.monotonic()
    k = 0
    next_trigger = 0
    rng = np.random.default_rng(1)
    while True:
        elapsed = time.monotonic() - t_start
        if elapsed >= seconds:
            break
        now_ms = int(time.time() * 1000)
        if next_trigger < n_trig and elapsed >= next_trigger / triggers_per_s:
            kind, device_id, _area = triggers[next_trigger]
            values: dict[str, Any] = (
                {"cover_open": True, "tilt_deg": 80.0}
                if kind == "manhole"
                else {"status": "Faulted", "error_code": "GroundFailure"}
            )
            payload = orjson.dumps({"ts": now_ms, "values": values})
            sent[device_id] = time.time()
            pub.publish(f"cityops/v1/{kind}/{device_id}/telemetry", payload, qos=1)
            next_trigger += 1
        due = k / msg_rate
        if elapsed < due:
            time.sleep(min(due - elapsed, 0.002))
            continue
        g = k % LOAD_GATEWAYS
        temps = rng.normal(21.0, 0.1, LOAD_PER_GATEWAY)
        body = {
            f"ht-l{g:02d}{d:03d}": [{"ts": now_ms, "values": {"temperature_c": round(float(t), 2)}}]
            for d, t in enumerate(temps)
        }
        pub.publish(f"cityops/v1/gateway/gw-l{g:02d}/telemetry", orjson.dumps(body), qos=1)
        k += 1
    achieved = k * LOAD_PER_GATEWAY / (time.monotonic() - t_start)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            if len(arrived) >= len(sent):
                break
        time.sleep(0.1)
    pub.loop_stop()
    sub.loop_stop()
    with lock:
        lat = [(arrived[d] - sent[d]) * 1000 for d in sent if d in arrived]
    print(
        json.dumps(
            {
                "latencies_ms": lat,
                "sent": sent,
                "arrived": arrived,
                "load_readings_per_s": achieved,
            }
        )
    )


class _Probe:
    """A batch consumer noting when it first sees each trigger device (wall clock)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    def on_batch(self, batch: CommittedBatch) -> None:
        now = time.time()
        for kind in (Kind.MANHOLE, Kind.CHARGER):
            kb = batch.readings.get(kind)
            if kb is not None:
                for d in kb.device_ids.tolist():
                    self.seen.setdefault(str(d), now)


def stop_all(service: Any, pipeline: Any, broker: subprocess.Popen[bytes]) -> None:
    """Stop ingest, then its consumers, then the private broker (even if a step fails)."""
    try:
        service.request_stop()
        service.stop()
        pipeline.stop()
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def measure_latency(admin: str, *, seconds: float, triggers_per_s: float) -> dict[str, Any]:
    """Run ingest with the pipeline under load; return latency stats."""
    from cityops.cli.pipeline import build_pipeline
    from cityops.settings import DatabaseSettings, MqttSettings, Settings
    from ingest.service import IngestService

    workdir = Path(tempfile.mkdtemp(prefix="cityops-bench-alerts-"))
    with scratch_db(admin) as dsn:
        with psycopg.connect(dsn) as conn:
            areas = [r[0] for r in conn.execute("SELECT code FROM areas ORDER BY code")]
            triggers = trigger_devices(int(seconds * triggers_per_s), areas)
            records = list(registry.parse_records(latency_registry(areas, triggers), "csv"))
            report = registry.import_devices(conn, records, "bench")
            if report.errors:
                raise RuntimeError(f"registry import failed: {report.errors[:3]}")
        broker, port = start_broker(workdir)
        settings = Settings(
            db=DatabaseSettings(dsn=dsn),
            mqtt=MqttSettings(port=port, client_id=f"bench-{uuid.uuid4().hex[:6]}"),
            storage=StorageSettings(timescaledb="off"),
        )
        pipeline = build_pipeline(settings)
        committed = _Probe()
        evaluated = _Probe()
        service = IngestService(settings, consumers=[committed, *pipeline.consumers, evaluated])
        try:
            service.start(wait_subscribed_s=15)
            child = subprocess.run(  # noqa: S603 - this script, our own arguments
                [
                    sys.executable,
                    __file__,
                    "--load-and-trigger",
                    str(port),
                    "10000",
                    str(seconds),
                    str(triggers_per_s),
                ],
                input=json.dumps(areas).encode(),
                capture_output=True,
                check=True,
                timeout=seconds + 120,
            )
        finally:
            stop_all(service, pipeline, broker)
    got = json.loads(child.stdout.decode().strip().splitlines()[-1])
    lat = np.array(got["latencies_ms"])
    sent, arrived = got["sent"], got["arrived"]
    stages = {
        "publish_to_commit": [committed.seen[d] - sent[d] for d in sent if d in committed.seen],
        "commit_to_evaluated": [
            evaluated.seen[d] - committed.seen[d]
            for d in sent
            if d in committed.seen and d in evaluated.seen
        ],
        "evaluated_to_mqtt": [
            arrived[d] - evaluated.seen[d] for d in sent if d in evaluated.seen and d in arrived
        ],
    }
    breakdown = {
        f"{name}_p50_ms": round(float(np.percentile(np.array(v) * 1000, 50)), 1)
        for name, v in stages.items()
        if v
    } | {
        f"{name}_p99_ms": round(float(np.percentile(np.array(v) * 1000, 99)), 1)
        for name, v in stages.items()
        if v
    }
    return {
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
        "latency_max_ms": round(float(lat.max()), 1) if lat.size else None,
        "latency_samples": int(lat.size),
        "triggers_sent": len(got["sent"]),
        "load_readings_per_s": round(got["load_readings_per_s"]),
        "latency_breakdown": breakdown,
    }


def main() -> None:
    """Run every phase and print the JSON result."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under two minutes")
    parser.add_argument("--load-and-trigger", nargs=4, metavar=("PORT", "RATE", "S", "TPS"))
    parser.add_argument("--skip-latency", action="store_true", help="no latency phase")
    parser.add_argument("--latency-only", action="store_true", help="only the latency phase")
    args = parser.parse_args()
    if args.load_and_trigger:
        port, rate, secs, tps = args.load_and_trigger
        load_and_trigger(int(port), float(rate), float(secs), float(tps))
        return
    from cityops import logging as cityops_logging
    from cityops.settings import LogSettings

    cityops_logging.configure(LogSettings(level="warning"))
    admin = admin_dsn()
    result: dict[str, Any] = {"quick": bool(args.quick), "python": platform.python_version()}
    result["nodata_tick"] = nodata_tick(100_000 if args.quick else 1_000_000)
    result["storm_store"] = storm_store(admin, 5_000 if args.quick else 50_000)
    if not args.skip_latency:
        result.update(measure_latency(admin, seconds=20 if args.quick else 60, triggers_per_s=4))
    if args.latency_only:
        print(json.dumps(result, indent=2, default=str))
        return
    result.update(eval_cost(admin, hours=1 if args.quick else 3))
    with scratch_db(admin) as dsn:
        t0 = time.perf_counter()
        run = replay(dsn, devices=600 if args.quick else 1500, seed=7, fault_rate=0.5)
        result["ground_truth_s"] = round(time.perf_counter() - t0, 1)
    per_10k = 10_000 / max(run.readings, 1) * 1000
    result["replay_eval_ms_per_10k_readings"] = round(run.eval_s * per_10k, 1)
    result["replay_decode_ms_per_10k_readings"] = round(run.decode_s * per_10k, 1)
    scored = {t: s for t, s in run.scores.items() if s.faults}
    # A type whose faults raised no alert at all has no precision (its recall shows the miss).
    result["precision_min"] = min(s.precision for s in scored.values() if s.precision is not None)
    result["recall_min"] = min(s.recall for s in scored.values() if s.recall is not None)
    result["per_fault"] = {t: s.as_json() for t, s in run.scores.items()}
    result["member_holds"] = run.holds
    result["readings"] = run.readings
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()

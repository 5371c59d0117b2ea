"""Fault injection plans and their ground truth (JSON Lines, optionally a database table).

A plan is drawn before the run from the seed: which devices (or which group of devices) fail, how,
from when to when. The device models read the plan tick by tick; the ground-truth file records it,
so alerts can be scored against exactly what was injected. Each device has at most one fault per
run, which keeps every fault's signature unambiguous in the stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from cityops.catalog import Kind
from simulators.clock import rfc3339


class FaultType(StrEnum):
    """Every fault the simulators can inject."""

    LAMP_OUT = "lamp_out"
    FLICKER = "flicker"
    STUCK_ON = "stuck_on"
    CABINET_OUTAGE = "cabinet_outage"
    COVER_OPEN = "cover_open"
    DISPLACED = "displaced"
    OVERFLOW = "overflow"
    SENSOR_OFFLINE = "sensor_offline"
    STUCK_SENSOR = "stuck_sensor"
    SUPPLY_FAILURE = "supply_failure"
    COLD_ROOM = "cold_room"
    FLATLINE = "flatline"
    FAULTED = "faulted"
    SITE_OFFLINE = "site_offline"
    STUCK_FINISHING = "stuck_finishing"
    # Anomaly shapes in the anomaly detector's field (simulators/shapes.py); FLATLINE above is
    # also one. Planned only when a run asks for them (``Simulation(shape_rate=...)``).
    SPIKE = "spike"
    STEP = "step"
    DRIFT = "drift"
    STUCK = "stuck"
    NOISY = "noisy"


@dataclass(frozen=True, kw_only=True, slots=True)
class FaultKindSpec:
    """How a fault type is drawn: its kind, weight among the kind's faults, duration range."""

    kind: Kind
    weight: float
    min_h: float
    max_h: float
    group: bool = False


FAULT_SPECS: Mapping[FaultType, FaultKindSpec] = {
    FaultType.LAMP_OUT: FaultKindSpec(kind=Kind.STREETLIGHT, weight=5, min_h=2, max_h=24),
    FaultType.FLICKER: FaultKindSpec(kind=Kind.STREETLIGHT, weight=2, min_h=1, max_h=6),
    FaultType.STUCK_ON: FaultKindSpec(kind=Kind.STREETLIGHT, weight=2, min_h=1, max_h=8),
    FaultType.CABINET_OUTAGE: FaultKindSpec(
        kind=Kind.STREETLIGHT, weight=1, min_h=0.5, max_h=4, group=True
    ),
    FaultType.COVER_OPEN: FaultKindSpec(kind=Kind.MANHOLE, weight=3, min_h=0.25, max_h=1.5),
    FaultType.DISPLACED: FaultKindSpec(kind=Kind.MANHOLE, weight=2, min_h=1, max_h=12),
    FaultType.OVERFLOW: FaultKindSpec(kind=Kind.MANHOLE, weight=2, min_h=0.5, max_h=3),
    FaultType.SENSOR_OFFLINE: FaultKindSpec(kind=Kind.MANHOLE, weight=2, min_h=1, max_h=12),
    FaultType.STUCK_SENSOR: FaultKindSpec(kind=Kind.MANHOLE, weight=1, min_h=2, max_h=24),
    FaultType.SUPPLY_FAILURE: FaultKindSpec(
        kind=Kind.HEATING, weight=1, min_h=4, max_h=16, group=True
    ),
    FaultType.COLD_ROOM: FaultKindSpec(kind=Kind.HEATING, weight=3, min_h=12, max_h=72),
    FaultType.FLATLINE: FaultKindSpec(kind=Kind.HEATING, weight=2, min_h=4, max_h=24),
    FaultType.FAULTED: FaultKindSpec(kind=Kind.CHARGER, weight=4, min_h=1, max_h=24),
    FaultType.SITE_OFFLINE: FaultKindSpec(
        kind=Kind.CHARGER, weight=1, min_h=0.5, max_h=6, group=True
    ),
    FaultType.STUCK_FINISHING: FaultKindSpec(kind=Kind.CHARGER, weight=2, min_h=1, max_h=8),
}
# Heating sensors go offline like covers do; the type is shared, the kind comes from the device.
OFFLINE_KINDS = (Kind.MANHOLE, Kind.HEATING)
SILENT_TYPES = frozenset({FaultType.SENSOR_OFFLINE, FaultType.SITE_OFFLINE})
FROZEN_TYPES = frozenset({FaultType.STUCK_SENSOR, FaultType.FLATLINE})
_FAULT_STREAM = 7_000
# Group faults may take at most this share of a kind's devices, leaving room for single faults.
GROUP_SHARE_CAP = 0.4
_HOUR_MS = 3_600_000


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One injected fault: a device, or a group and its member devices, over [start, end)."""

    fault_id: str
    kind: Kind
    fault_type: FaultType
    device_ids: tuple[str, ...]
    indices: tuple[int, ...]
    start_ms: int
    end_ms: int
    group_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ground-truth record (see docs/simulators.md)."""
        return {
            "fault_id": self.fault_id,
            "kind": self.kind.value,
            "fault_type": self.fault_type.value,
            "device_id": self.device_ids[0] if self.group_id is None else None,
            "group_id": self.group_id,
            "device_ids": list(self.device_ids),
            "start": rfc3339(self.start_ms),
            "end": rfc3339(self.end_ms),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "params": self.params,
        }

    def active(self, t_ms: int) -> bool:
        """Whether the fault is active at ``t_ms``."""
        return self.start_ms <= t_ms < self.end_ms


def fault_from_json(record: Mapping[str, Any], index: Mapping[str, int] | None = None) -> Fault:
    """A ground-truth record back as a Fault (``index`` maps device ids to rows, when known)."""
    ids = tuple(str(d) for d in record["device_ids"])
    return Fault(
        fault_id=str(record["fault_id"]),
        kind=Kind(record["kind"]),
        fault_type=FaultType(record["fault_type"]),
        device_ids=ids,
        indices=tuple(index[d] for d in ids) if index is not None else (),
        start_ms=int(record["start_ms"]),
        end_ms=int(record["end_ms"]),
        group_id=record.get("group_id"),
        params=dict(record.get("params") or {}),
    )


# A start-time constraint: given a candidate (start, end), return the adjusted window or None.
Constraint = Callable[[int, int], tuple[int, int] | None]


@dataclass(kw_only=True)
class PlanContext:
    """What the planner needs to know about the run."""

    seed: int
    start_ms: int
    end_ms: int
    tick_ms: int
    rate: float
    constraints: Mapping[FaultType, Constraint] = field(default_factory=dict)


def _align(ms: int, ctx: PlanContext) -> int:
    return ctx.start_ms + (ms - ctx.start_ms) // ctx.tick_ms * ctx.tick_ms


def plan_faults(tables: Mapping[Kind, Any], ctx: PlanContext) -> list[Fault]:  # noqa: PLR0912
    """Draw the run's faults: about ``rate`` faults per device per simulated day.

    ``tables`` maps kinds to DeviceTables. Group faults (cabinet outage, compound supply failure,
    site offline) are drawn per group at the same rate times three. Start and end are aligned to
    ticks; a fault never outlives the run.
    """
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, _FAULT_STREAM]))
    days = (ctx.end_ms - ctx.start_ms) / 86_400_000
    faults: list[Fault] = []
    counter = 0
    for kind in (Kind.STREETLIGHT, Kind.MANHOLE, Kind.HEATING, Kind.CHARGER):
        table = tables.get(kind)
        if table is None or len(table) == 0:
            continue
        busy = np.zeros(len(table), dtype=np.bool_)
        types = [t for t, s in FAULT_SPECS.items() if s.kind == kind]
        if kind in OFFLINE_KINDS and FaultType.SENSOR_OFFLINE not in types:
            types.append(FaultType.SENSOR_OFFLINE)
        for ftype in sorted(types, key=lambda t: not FAULT_SPECS[t].group):
            spec = FAULT_SPECS[ftype]
            weight = spec.weight / sum(FAULT_SPECS[t].weight for t in types)
            if spec.group:
                n_groups = len(table.group_ids)
                expected = n_groups * ctx.rate * 3 * days
            else:
                expected = len(table) * ctx.rate * days * weight
            count = int(rng.poisson(expected))
            for _ in range(count):
                window = _draw_window(rng, ctx, ftype, spec)
                if window is None:
                    continue
                start, end = window
                if spec.group:
                    candidates = _free_groups(table.group, busy, len(table.group_ids))
                    if len(candidates) == 0:
                        continue
                    g = int(candidates[int(rng.integers(0, len(candidates)))])
                    members = np.flatnonzero(table.group == g)
                    if busy.sum() + len(members) > GROUP_SHARE_CAP * len(table):
                        continue
                    group_id: str | None = table.group_ids[g]
                else:
                    free = np.flatnonzero(~busy)
                    if len(free) == 0:
                        continue
                    members = free[[int(rng.integers(0, len(free)))]]
                    group_id = None
                busy[members] = True
                counter += 1
                faults.append(
                    Fault(
                        fault_id=f"f{ctx.seed}-{counter:06d}",
                        kind=kind,
                        fault_type=ftype,
                        device_ids=tuple(str(table.device_id[i]) for i in members),
                        indices=tuple(int(i) for i in members),
                        start_ms=start,
                        end_ms=end,
                        group_id=group_id,
                        params=_params(ftype, members),
                    )
                )
    faults.sort(key=lambda f: (f.start_ms, f.fault_id))
    return faults


def _free_groups(
    group: npt.NDArray[np.int32], busy: npt.NDArray[np.bool_], n_groups: int
) -> npt.NDArray[np.intp]:
    valid = group >= 0
    taken = np.zeros(n_groups, dtype=np.bool_)
    taken[group[valid & busy]] = True
    present = np.bincount(group[valid], minlength=n_groups) > 0
    return np.flatnonzero(present & ~taken)


def _draw_window(
    rng: np.random.Generator, ctx: PlanContext, ftype: FaultType, spec: FaultKindSpec
) -> tuple[int, int] | None:
    return draw_window(rng, ctx, spec.min_h, spec.max_h, ctx.constraints.get(ftype))


def draw_window(
    rng: np.random.Generator,
    ctx: PlanContext,
    min_h: float,
    max_h: float,
    constraint: Constraint | None,
) -> tuple[int, int] | None:
    """A fault window of ``min_h``..``max_h`` hours inside the run, tick-aligned, or None."""
    min_ms = int(min_h * _HOUR_MS)
    latest = ctx.end_ms - min_ms
    if latest <= ctx.start_ms:
        return None
    for _ in range(30):
        start = int(rng.integers(ctx.start_ms, latest))
        end = start + int(rng.uniform(min_h, max_h) * _HOUR_MS)
        if constraint is not None:
            adjusted = constraint(start, end)
            if adjusted is None:
                continue
            start, end = adjusted
        start = _align(start, ctx)
        end = min(_align(end, ctx), ctx.end_ms)
        if end - start >= max(ctx.tick_ms * 3, min_ms // 2):
            return start, end
    return None


OCPP_FAULT_ERRORS = ("GroundFailure", "OverCurrentFailure", "InternalError", "PowerSwitchFailure")


def faulted_error_code(index: int) -> str:
    """The OCPP error code a connector reports when it is Faulted (fixed per connector)."""
    return OCPP_FAULT_ERRORS[index % len(OCPP_FAULT_ERRORS)]


def _params(ftype: FaultType, members: npt.NDArray[np.intp]) -> dict[str, Any]:
    if ftype is FaultType.FAULTED:
        return {"error_code": faulted_error_code(int(members[0]))}
    return {}


def write_ground_truth(faults: Iterable[Fault], out: IO[str]) -> int:
    """Write faults as JSON Lines, one record per fault; return how many."""
    n = 0
    for f in faults:
        out.write(json.dumps(f.to_json(), ensure_ascii=False, sort_keys=True) + "\n")
        n += 1
    return n


def read_ground_truth(path: Path) -> list[dict[str, Any]]:
    """The records of a ground-truth JSON Lines file."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


INSERT_TRUTH_SQL = """
INSERT INTO sim_ground_truth (run_id, fault_id, kind, fault_type, device_id, group_id,
                              device_ids, starts_at, ends_at, params)
VALUES (%s, %s, %s, %s, %s, %s, %s, to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), %s)
ON CONFLICT (run_id, fault_id) DO UPDATE SET params = EXCLUDED.params
"""


def store_ground_truth(conn: Any, run_id: str, faults: Iterable[Fault]) -> int:
    """Insert the faults into ``sim_ground_truth`` (migration 0004); return how many rows.

    Storing a run again updates its faults' ``params``: the run learns ``effect_end`` (when a
    repaired room has warmed up) only while it simulates, so the CLI stores before and after.
    """
    from psycopg.types.json import Jsonb

    rows = [
        (
            run_id,
            f.fault_id,
            f.kind.value,
            f.fault_type.value,
            f.device_ids[0] if f.group_id is None else None,
            f.group_id,
            list(f.device_ids),
            f.start_ms,
            f.end_ms,
            Jsonb(f.params),
        )
        for f in faults
    ]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(INSERT_TRUTH_SQL, rows)
    return len(rows)

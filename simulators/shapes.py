"""Anomaly shapes: what a faulty sensor's value looks like, injected into the followed field.

The stream core's anomaly detector follows one field per kind (``catalog.ANOMALY_FIELD``); the
shapes below distort that field of one device over a fault's window, so the detector (and any
other) can be scored against ground truth (docs/simulators.md, "Anomaly shapes"):

- ``spike``: the first one or two readings in the window jump by the magnitude (a glitch);
- ``step``: every reading is off by the magnitude (a level shift: sensor moved, driver fault);
- ``drift``: the offset grows linearly from 0 to the magnitude over the window (a slow ramp:
  calibration drift, a failing component heating up);
- ``stuck``: the value is stuck at one constant, the start value shifted by the magnitude;
- ``noisy``: Gaussian noise with the magnitude as standard deviation (a noisy burst: loose
  contact, interference);
- ``flatline`` is the existing frozen-sensor fault (every field repeats its last value).

Magnitudes are drawn at planning time in the field's unit, in proportion to what the field
normally does: degrees for a room, a share of the rated power for a lamp or a connector. Values
are clipped to the catalog's range and rounded to the field's resolution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cityops import catalog
from cityops.catalog import Kind
from simulators.faults import Constraint, Fault, FaultType, PlanContext, draw_window


@dataclass(frozen=True, kw_only=True, slots=True)
class ShapeSpec:
    """How a shape is drawn: its kinds, duration range (hours) and magnitude range.

    ``magnitude`` is in the field's unit for a room sensor and a share of the rated power for a
    lamp or a connector (``RATED_ATTR``).
    """

    kinds: tuple[Kind, ...]
    min_h: float
    max_h: float
    magnitude: Mapping[Kind, tuple[float, float]]
    signed: bool = False  # the offset may go either way (rooms); power shapes only add
    # A kind's own duration range where it needs one (hours).
    hours: Mapping[Kind, tuple[float, float]] | None = None

    def duration_h(self, kind: Kind) -> tuple[float, float]:
        """The range of this shape's duration on ``kind``, hours."""
        return (self.hours or {}).get(kind, (self.min_h, self.max_h))


H, L, C = Kind.HEATING, Kind.STREETLIGHT, Kind.CHARGER
SHAPES: Mapping[FaultType, ShapeSpec] = {
    FaultType.SPIKE: ShapeSpec(
        kinds=(H, L, C), min_h=1, max_h=2,
        magnitude={H: (5, 10), L: (1.5, 3), C: (2, 3)}, signed=True,
    ),
    FaultType.STEP: ShapeSpec(
        kinds=(H, L), min_h=3, max_h=8, magnitude={H: (3, 6), L: (0.4, 0.8)}, signed=True
    ),
    FaultType.DRIFT: ShapeSpec(
        kinds=(H, L), min_h=4, max_h=8, magnitude={H: (4, 8), L: (0.5, 1.0)}, signed=True
    ),
    FaultType.STUCK: ShapeSpec(
        kinds=(H, L), min_h=3, max_h=8, magnitude={H: (3, 6), L: (0.3, 0.6)}, signed=True
    ),
    FaultType.NOISY: ShapeSpec(
        kinds=(H, L, C), min_h=2, max_h=4, magnitude={H: (2, 4), L: (0.2, 0.4), C: (0.6, 1.0)}
    ),
    # A room reports every 10-30 min and, at 0.1 °C, repeats its value 20-30 % of the time:
    # a frozen room takes 12 or so identical reports to stand out at the false-alarm budget
    # (docs/alerts.md), 6 h at 30 min. Its flatlines run 8-24 h (16-144 reports).
    FaultType.FLATLINE: ShapeSpec(
        kinds=(H, L), min_h=4, max_h=10, magnitude={}, hours={H: (8, 24)}
    ),
}  # fmt: skip
VALUE_SHAPES = frozenset(t for t in SHAPES if t is not FaultType.FLATLINE)
RATED_ATTR: Mapping[Kind, str] = {L: "rated_power_w", C: "power_kw"}
SPIKE_READINGS = (1, 2)


def draw_params(
    fault_type: FaultType, kind: Kind, rng: np.random.Generator, attrs: Mapping[str, Any]
) -> dict[str, Any]:
    """The ground-truth parameters of one shape fault on a device with registry ``attrs``."""
    spec = SHAPES[fault_type]
    out: dict[str, Any] = {"shape": fault_type.value, "field": catalog.ANOMALY_FIELD[kind]}
    if fault_type is FaultType.FLATLINE:
        return out
    lo, hi = spec.magnitude[kind]
    magnitude = float(rng.uniform(lo, hi))
    rated_attr = RATED_ATTR.get(kind)
    if rated_attr is not None:
        magnitude *= float(attrs.get(rated_attr) or 1.0)
    if spec.signed and kind is Kind.HEATING and rng.random() < 0.5:
        magnitude = -magnitude
    out["magnitude"] = round(magnitude, 3)
    if fault_type is FaultType.SPIKE:
        out["spike_readings"] = int(rng.integers(SPIKE_READINGS[0], SPIKE_READINGS[1] + 1))
    return out


def apply(fault: Fault, value: float | None, t_ms: int, rng: np.random.Generator) -> float | None:
    """The value a device with this shape fault reports at ``t_ms`` instead of ``value``.

    Counts the readings it changed in ``fault.params["readings"]`` (a spike's count also ends
    it); None (a reading without the field) stays None.
    """
    if value is None:
        return None
    p = fault.params
    spec = catalog.KINDS[fault.kind].reading_field(str(p["field"]))
    magnitude = float(p["magnitude"])
    shape = FaultType(p["shape"])
    done = int(p.get("readings", 0))
    if shape is FaultType.SPIKE:
        if done >= int(p["spike_readings"]):
            return value
        x = value + magnitude
    elif shape is FaultType.STEP:
        x = value + magnitude
    elif shape is FaultType.DRIFT:
        share = (t_ms - fault.start_ms) / max(1, fault.end_ms - fault.start_ms)
        x = value + magnitude * min(max(share, 0.0), 1.0)
    elif shape is FaultType.STUCK:
        if "stuck_at" not in p:
            p["stuck_at"] = value + magnitude
        x = float(p["stuck_at"])
    else:
        x = value + float(rng.normal(0.0, abs(magnitude)))
    p["readings"] = done + 1
    if spec is not None:
        lo = spec.minimum if spec.minimum is not None else -np.inf
        hi = spec.maximum if spec.maximum is not None else np.inf
        x = min(max(x, lo), hi)
        if spec.resolution:
            x = round(round(x / spec.resolution) * spec.resolution, 6)
    return x


_SHAPE_STREAM = 7_500


def _within_run(ctx: PlanContext, constraint: Constraint | None) -> Constraint:
    """``constraint`` and a window that ends inside the run: a shape cut short by the end of
    the run would be judged on less than its drawn duration (a short flatline is no flatline)."""

    def check(start: int, end: int) -> tuple[int, int] | None:
        window = (start, end) if constraint is None else constraint(start, end)
        if window is None or window[1] > ctx.end_ms:
            return None
        return window

    return check


def plan_shapes(
    tables: Mapping[Kind, Any],
    ctx: PlanContext,
    rate: float,
    busy: set[str],
    constraints: Mapping[tuple[Kind, FaultType], Constraint] | None = None,
) -> list[Fault]:
    """Draw shape faults: about ``rate`` per device per simulated day, spread evenly over the
    shapes each kind has, on devices not in ``busy`` (one fault per device per run)."""
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, _SHAPE_STREAM]))
    days = (ctx.end_ms - ctx.start_ms) / 86_400_000
    out: list[Fault] = []
    counter = 0
    for kind in (Kind.STREETLIGHT, Kind.HEATING, Kind.CHARGER):
        table = tables.get(kind)
        if table is None or len(table) == 0:
            continue
        taken = np.array([str(d) in busy for d in table.device_id.tolist()], dtype=np.bool_)
        types = [t for t, s in SHAPES.items() if kind in s.kinds]
        for ftype in types:
            spec = SHAPES[ftype]
            count = int(rng.poisson(len(table) * rate * days / len(types)))
            for _ in range(count):
                window = draw_window(
                    rng, ctx, *spec.duration_h(kind),
                    _within_run(ctx, (constraints or {}).get((kind, ftype))),
                )  # fmt: skip
                free = np.flatnonzero(~taken)
                if window is None or len(free) == 0:
                    continue
                i = int(free[int(rng.integers(0, len(free)))])
                taken[i] = True
                counter += 1
                attrs = {name: col[i] for name, col in table.attrs.items()}
                out.append(
                    Fault(
                        fault_id=f"s{ctx.seed}-{counter:06d}",
                        kind=kind,
                        fault_type=ftype,
                        device_ids=(str(table.device_id[i]),),
                        indices=(i,),
                        start_ms=window[0],
                        end_ms=window[1],
                        params=draw_params(ftype, kind, rng, attrs),
                    )
                )
    return out

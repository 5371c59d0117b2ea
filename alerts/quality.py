"""Alert quality: precision, recall and detection delay per fault type against ground truth.

Ground truth is the simulators' JSON Lines record of injected faults (docs/simulators.md): per
fault its type, the device (or the group and its member devices) and [start, end). Each fault
type maps to the rule that should catch it. A fault counts as detected when an alert of that rule
fired on one of its devices (or on its group) between its start and the end of its effect plus a
grace period (the effect of a slow fault outlasts its repair: the simulators record when a
repaired room is back to normal as ``effect_end``; without it the effect ends with the fault);
an alert of a mapped rule that matches no fault of its type is a false positive, unless it
matches a fault of another type on the same device (or group): then the device really was in
trouble and the alert only names a neighbouring symptom (a lamp dark in a cabinet outage, an open
cover that is also tilted), so it is counted as ``explained`` and left out of precision.

Some faults are injected before their signature can show: a cold room cools with a time constant
of 15–30 h, so a cold-room fault that starts late in a simulated day may end (with the run)
before the room has been below the standard for the rule's ``for``. Whoever builds the truth may
mark such a fault ``detectable=False`` (the replay in benchmarks/alerts.py does, from the stream);
it is then left out of recall (counted as ``undetectable``), and an alert that matches it still
counts as true for precision.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# Which rule is expected to catch each simulated fault type. Types with no entry are not scored
# (the report lists them) because no shipped rule claims to detect them.
EXPECTED_RULE: Mapping[str, str] = {
    "lamp_out": "lamp_off_while_due",
    "stuck_on": "lamp_on_in_daylight",
    "cabinet_outage": "lamp_group_outage",
    "cover_open": "cover_open",
    "displaced": "cover_displaced",
    "overflow": "manhole_overflow",
    "sensor_offline": "device_silent",
    "cold_room": "room_below_standard",
    "supply_failure": "compound_cooling",
    "faulted": "charger_faulted",
    "site_offline": "charger_site_offline",
    "stuck_finishing": "charger_stuck_finishing",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class TruthFault:
    """One injected fault from the ground-truth file."""

    fault_id: str
    fault_type: str
    device_ids: frozenset[str]
    group_id: str | None
    start: datetime
    end: datetime
    detectable: bool = True  # False: the stream never showed the rule's condition long enough
    # When the fault's effect ended, if after ``end`` (a repaired room is still cold for hours).
    effect_end: datetime | None = None

    @property
    def span_end(self) -> datetime:
        """The end of the fault's effect: ``effect_end`` when recorded, else ``end``."""
        return self.end if self.effect_end is None else max(self.end, self.effect_end)


@dataclass(frozen=True, kw_only=True, slots=True)
class FiredAlert:
    """A fired alert as scoring needs it."""

    rule: str
    device_id: str | None
    group: str | None  # value of a group rule's group attribute
    fired_at: datetime


@dataclass(kw_only=True)
class TypeScore:
    """Precision, recall and delays of one fault type."""

    fault_type: str
    rule: str
    faults: int = 0
    undetectable: int = 0  # faults left out of recall (see the module docstring)
    detected: int = 0
    alerts: int = 0
    true_alerts: int = 0
    explained: int = 0  # alerts that match a fault of another type instead
    delays_s: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        """Detected faults ÷ detectable faults (None without any)."""
        judged = self.faults - self.undetectable
        return self.detected / judged if judged else None

    @property
    def precision(self) -> float | None:
        """Alerts that match a fault ÷ alerts not explained by another fault (None if none)."""
        judged = self.alerts - self.explained
        return self.true_alerts / judged if judged else None

    @property
    def delay_p50_s(self) -> float | None:
        """Median time from fault start to the alert firing."""
        return statistics.median(self.delays_s) if self.delays_s else None

    def as_json(self) -> dict[str, object]:
        """The per-fault entry of the benchmark output."""
        return {
            "rule": self.rule,
            "faults": self.faults,
            "undetectable": self.undetectable,
            "detected": self.detected,
            "alerts": self.alerts,
            "true_alerts": self.true_alerts,
            "explained": self.explained,
            "precision": self.precision,
            "recall": self.recall,
            "delay_p50_s": self.delay_p50_s,
        }


def _matches(alert: FiredAlert, fault: TruthFault, grace: timedelta) -> bool:
    if not fault.start <= alert.fired_at <= fault.span_end + grace:
        return False
    if fault.group_id is not None and alert.group == fault.group_id:
        return True
    return alert.device_id is not None and alert.device_id in fault.device_ids


def score(
    faults: Iterable[TruthFault],
    alerts: Sequence[FiredAlert],
    *,
    grace: timedelta = timedelta(minutes=30),
    expected: Mapping[str, str] = EXPECTED_RULE,
) -> dict[str, TypeScore]:
    """Score alerts against faults, per fault type that has an expected rule."""
    by_type: dict[str, list[TruthFault]] = {}
    for f in faults:
        by_type.setdefault(f.fault_type, []).append(f)
    scores: dict[str, TypeScore] = {}
    for fault_type, rule in expected.items():
        mine = by_type.get(fault_type, [])
        candidates = [a for a in alerts if a.rule == rule]
        s = TypeScore(fault_type=fault_type, rule=rule, faults=len(mine))
        for f in mine:
            if not f.detectable:
                s.undetectable += 1
                continue
            hits = [a for a in candidates if _matches(a, f, grace)]
            if hits:
                s.detected += 1
                first = min(a.fired_at for a in hits)
                s.delays_s.append((first - f.start).total_seconds())
        # Several fault types can share a rule (none do in the defaults); an alert is true if it
        # matches any fault whose type expects this rule.
        sharing = [f for t, r in expected.items() if r == rule for f in by_type.get(t, [])]
        s.alerts = len(candidates)
        others = [f for t, fs in by_type.items() if expected.get(t) != rule for f in fs]
        for a in candidates:
            if any(_matches(a, f, grace) for f in sharing):
                s.true_alerts += 1
            elif any(_matches(a, f, timedelta(0)) for f in others):
                s.explained += 1
        scores[fault_type] = s
    return scores


# The anomaly rule of each kind whose detector field the simulators' shapes distort
# (simulators/shapes.py); a shape fault of a kind is expected to be caught by its rule.
ANOMALY_RULE: Mapping[str, str] = {
    "streetlight": "lamp_power_anomaly",
    "heating": "room_temperature_anomaly",
    "charger": "charger_power_anomaly",
}


def score_anomalies(
    faults: Iterable[tuple[str, TruthFault]],
    alerts: Sequence[FiredAlert],
    *,
    sensors: Mapping[str, Iterable[str]],
    days: float,
    rules: Mapping[str, str] = ANOMALY_RULE,
) -> dict[str, object]:
    """Anomaly quality per kind and shape (docs/alerts.md, "Anomaly quality").

    ``faults`` are (kind, shape fault); an alert matches a fault when it fires on the fault's
    device between its start and its effect end (no grace). Precision is the kind's rule's:
    matching alerts ÷ all its alerts, so it is the same for every shape of a kind.
    ``false_alerts_per_1000_sensor_days`` counts the rules' alerts on sensors (``sensors`` by
    kind) without any fault, per 1,000 days of those sensors over the run's ``days``.
    """
    faults = list(faults)
    table: dict[str, dict[str, object]] = {}
    false_alerts = 0
    healthy_days = 0.0
    for kind, rule in rules.items():
        mine = [f for k, f in faults if k == kind]
        shapes = sorted({f.fault_type for f in mine})
        scores = score(
            mine,
            [a for a in alerts if a.rule == rule],
            grace=timedelta(0),
            expected=dict.fromkeys(shapes, rule),
        )
        for shape, s in scores.items():
            table[f"{kind}.{shape}"] = {
                "faults": s.faults,
                "undetectable": s.undetectable,
                "detected": s.detected,
                "alerts": s.alerts,
                "precision": None if s.precision is None else round(s.precision, 3),
                "recall": None if s.recall is None else round(s.recall, 3),
                "detection_delay_p50_s": s.delay_p50_s,
            }
        faulty = {d for f in mine for d in f.device_ids}
        healthy = set(sensors.get(kind, ())) - faulty
        healthy_days += len(healthy) * days
        false_alerts += sum(1 for a in alerts if a.rule == rule and a.device_id in healthy)
    precision = [float(v["precision"]) for v in table.values() if v["precision"] is not None]  # type: ignore[arg-type]
    recall = [float(v["recall"]) for v in table.values() if v["recall"] is not None]  # type: ignore[arg-type]
    return {
        "precision_min": min(precision) if precision else None,
        "recall_min": min(recall) if recall else None,
        "false_alerts_per_1000_sensor_days": round(1000 * false_alerts / healthy_days, 3)
        if healthy_days
        else None,
        "false_alerts": false_alerts,
        "healthy_sensor_days": round(healthy_days),
        "per_shape": table,
    }

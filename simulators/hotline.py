"""The 12345 hotline: complaints that follow injected faults, plus background noise.

Correlated complaints come after a delay and only while the fault is noticeable: a dark lamp only
at night, a cold room only in the heating season. Probabilities and delays are invented, chosen
so that sensors usually see a fault before a citizen calls (the "proactive discovery" indicator).
Background complaints are unrelated to any fault and carry no device id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cityops.catalog import ComplaintCategory, ComplaintStatus, Kind
from simulators.clock import rfc3339
from simulators.faults import Fault, FaultType
from simulators.scenario import Scenario

_HOUR_MS = 3_600_000
_HOTLINE_STREAM = 8_000
SOURCE = "12345"


@dataclass(frozen=True, kw_only=True, slots=True)
class Reaction:
    """How citizens react to one fault type: category, chance per affected device, delay."""

    category: ComplaintCategory
    probability: float
    delay_h: tuple[float, float]
    texts: tuple[str, ...]
    per_group: int = 0


REACTIONS: Mapping[FaultType, Reaction] = {
    FaultType.LAMP_OUT: Reaction(
        category=ComplaintCategory.STREETLIGHT,
        probability=0.35,
        delay_h=(0.5, 4),
        texts=("路灯不亮，晚上走路很黑", "门口路灯坏了好几天了"),
    ),
    FaultType.FLICKER: Reaction(
        category=ComplaintCategory.STREETLIGHT,
        probability=0.2,
        delay_h=(0.5, 3),
        texts=("路灯一闪一闪的，晃眼睛",),
    ),
    FaultType.STUCK_ON: Reaction(
        category=ComplaintCategory.STREETLIGHT,
        probability=0.05,
        delay_h=(1, 6),
        texts=("白天路灯还亮着，浪费电",),
    ),
    FaultType.CABINET_OUTAGE: Reaction(
        category=ComplaintCategory.STREETLIGHT,
        probability=0.04,
        delay_h=(0.2, 2),
        texts=("整条路的路灯都灭了", "这一片路灯全黑了，很不安全"),
        per_group=2,
    ),
    FaultType.COVER_OPEN: Reaction(
        category=ComplaintCategory.MANHOLE,
        probability=0.4,
        delay_h=(0.1, 1),
        texts=("路上井盖被打开了，很危险", "井盖没盖好"),
    ),
    FaultType.DISPLACED: Reaction(
        category=ComplaintCategory.MANHOLE,
        probability=0.3,
        delay_h=(0.5, 6),
        texts=("井盖移位了，车过去咣当响",),
    ),
    FaultType.OVERFLOW: Reaction(
        category=ComplaintCategory.MANHOLE,
        probability=0.3,
        delay_h=(0.2, 2),
        texts=("井里冒水，路面积水",),
    ),
    FaultType.SUPPLY_FAILURE: Reaction(
        category=ComplaintCategory.HEATING,
        probability=0.2,
        delay_h=(2, 8),
        texts=("暖气不热了，家里很冷", "小区暖气停了", "屋里温度太低"),
    ),
    FaultType.COLD_ROOM: Reaction(
        category=ComplaintCategory.HEATING,
        probability=0.6,
        delay_h=(6, 36),
        texts=("家里暖气不热，室温不达标", "暖气温度太低，老人孩子受不了"),
    ),
    FaultType.FAULTED: Reaction(
        category=ComplaintCategory.CHARGING,
        probability=0.1,
        delay_h=(0.5, 8),
        texts=("充电桩坏了，充不了电",),
    ),
    FaultType.SITE_OFFLINE: Reaction(
        category=ComplaintCategory.CHARGING,
        probability=0.05,
        delay_h=(0.3, 3),
        texts=("充电站所有桩都用不了", "充电桩扫码没反应"),
        per_group=1,
    ),
    FaultType.STUCK_FINISHING: Reaction(
        category=ComplaintCategory.CHARGING,
        probability=0.05,
        delay_h=(1, 6),
        texts=("充完电了枪拔不下来，桩一直显示结束中",),
    ),
}

# Background complaints per device (or per area for "other") per day; invented.
BACKGROUND_PER_DAY: Mapping[ComplaintCategory, float] = {
    ComplaintCategory.STREETLIGHT: 0.0004,
    ComplaintCategory.MANHOLE: 0.0008,
    ComplaintCategory.HEATING: 0.002,
    ComplaintCategory.CHARGING: 0.0003,
    ComplaintCategory.OTHER: 0.05,
}
_BACKGROUND_TEXT: Mapping[ComplaintCategory, str] = {
    ComplaintCategory.STREETLIGHT: "路灯太暗了，希望增加路灯",
    ComplaintCategory.MANHOLE: "井盖有异响",
    ComplaintCategory.HEATING: "暖气感觉不够热",
    ComplaintCategory.CHARGING: "充电桩被燃油车占位",
    ComplaintCategory.OTHER: "小区门口占道经营，影响通行",
}
_CATEGORY_KIND: Mapping[ComplaintCategory, Kind] = {
    ComplaintCategory.STREETLIGHT: Kind.STREETLIGHT,
    ComplaintCategory.MANHOLE: Kind.MANHOLE,
    ComplaintCategory.HEATING: Kind.HEATING,
    ComplaintCategory.CHARGING: Kind.CHARGER,
}

# Tells whether a fault is noticeable at an instant (a dark lamp only at night, ...).
Noticeable = Callable[[Fault, int], bool]


@dataclass(frozen=True, kw_only=True, slots=True)
class Complaint:
    """One complaint, when it is received, and the fault it follows (None for noise)."""

    received_ms: int
    record: dict[str, Any]
    fault_id: str | None


def _address(scenario: Scenario, kind: Kind, i: int) -> str:
    table = scenario.tables[kind]
    area = scenario.areas[int(table.area[i])].name_zh
    attrs = table.attrs
    if kind is Kind.HEATING:
        return f"{area}{attrs['compound'][i]}{attrs['building'][i]}"
    if kind is Kind.CHARGER:
        return f"{area}充电站{attrs['site_id'][i]}"
    return f"{area}{attrs['road'][i]}"


def _record(
    scenario: Scenario,
    rng: np.random.Generator,
    number: int,
    received_ms: int,
    category: ComplaintCategory,
    kind: Kind | None,
    i: int | None,
    text: str,
    with_device: bool,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "complaint_id": f"{SOURCE}-{scenario.seed}-{number:07d}",
        "received_at": rfc3339(received_ms),
        "category": category.value,
        "text": text,
        "status": ComplaintStatus.RECEIVED.value,
    }
    if kind is None or i is None:
        area = scenario.areas[int(rng.integers(0, len(scenario.areas)))]
        record["area_code"] = area.code
        record["address"] = f"{area.name_zh}"
        return record
    table = scenario.tables[kind]
    record["area_code"] = scenario.areas[int(table.area[i])].code
    record["address"] = _address(scenario, kind, i)
    if rng.random() < 0.6:
        # Callers describe a place, not a survey point: about 50 m of error.
        record["lat"] = round(float(table.lat[i] + rng.normal(0, 0.0005)), 6)
        record["lon"] = round(float(table.lon[i] + rng.normal(0, 0.0005)), 6)
    if with_device:
        record["device_id"] = str(table.device_id[i])
    return record


def plan_complaints(
    scenario: Scenario,
    faults: list[Fault],
    *,
    start_ms: int,
    end_ms: int,
    noticeable: Noticeable,
    heating_season: Callable[[int], bool],
) -> list[Complaint]:
    """Every complaint of the run, in order of reception."""
    rng = np.random.default_rng(np.random.SeedSequence([scenario.seed, _HOTLINE_STREAM]))
    drafts: list[tuple[int, ComplaintCategory, Kind | None, int | None, str, bool, str | None]] = []
    for fault in faults:
        reaction = REACTIONS.get(fault.fault_type)
        if reaction is None:
            continue
        callers = len(fault.indices) if not reaction.per_group else reaction.per_group
        for c in range(callers):
            p = reaction.probability if not reaction.per_group else 0.9
            if rng.random() >= p:
                continue
            i = fault.indices[c % len(fault.indices)] if fault.indices else None
            if reaction.per_group and fault.indices:
                i = fault.indices[int(rng.integers(0, len(fault.indices)))]
            noticed = _first_noticed(fault, noticeable)
            if noticed is None:
                continue
            lo, hi = reaction.delay_h
            received = noticed + int(rng.uniform(lo, hi) * _HOUR_MS)
            # Cold rooms stay cold for hours after repair; other faults stop calls at repair.
            grace = 6 * _HOUR_MS if fault.kind is Kind.HEATING else 0
            if received >= min(fault.end_ms + grace, end_ms):
                continue
            text = reaction.texts[int(rng.integers(0, len(reaction.texts)))]
            drafts.append(
                (
                    received,
                    reaction.category,
                    fault.kind,
                    i,
                    text,
                    rng.random() < 0.3,
                    fault.fault_id,
                )
            )
    days = (end_ms - start_ms) / 86_400_000
    for category, rate in BACKGROUND_PER_DAY.items():
        kind = _CATEGORY_KIND.get(category)
        if category is ComplaintCategory.HEATING and not heating_season(start_ms):
            continue
        population = len(scenario.areas) if kind is None else _count(scenario, kind)
        for _ in range(int(rng.poisson(population * rate * days))):
            received = int(rng.integers(start_ms, end_ms))
            i = None if kind is None else int(rng.integers(0, _count(scenario, kind)))
            drafts.append((received, category, kind, i, _BACKGROUND_TEXT[category], False, None))
    drafts.sort(key=lambda d: (d[0], d[6] or "", d[3] or 0))
    out = []
    for number, (received, category, kind, i, text, with_device, fault_id) in enumerate(
        drafts, start=1
    ):
        record = _record(scenario, rng, number, received, category, kind, i, text, with_device)
        out.append(Complaint(received_ms=received, record=record, fault_id=fault_id))
    return out


def _count(scenario: Scenario, kind: Kind) -> int:
    table = scenario.tables.get(kind)
    return 0 if table is None else len(table)


def _first_noticed(fault: Fault, noticeable: Noticeable) -> int | None:
    step = 10 * 60_000
    t = fault.start_ms
    while t < fault.end_ms:
        if noticeable(fault, t):
            return t
        t += step
    return None

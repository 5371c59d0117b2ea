"""The plan-indicator catalog: shipped plan indicators plus local indicators and targets.

The shipped catalog (``reports/data/indicators.csv``) holds the district city-governance plan
(``cy-gov``, 28 indicators) and the city city-management plan (``bj-cm``, 14). A deployment adds
local indicators, or replaces the target of a shipped one, in the ``indicator_local`` table; a
local row with a shipped key replaces that indicator. The catalog version is the edition plus a
hash of the shipped content and every local row, so a report names exactly the catalog it used.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import date
from enum import StrEnum
from importlib import resources
from typing import TypeVar

import orjson

from cityops.errors import ValidationError

EDITION = "2026.1"

_E = TypeVar("_E", bound=StrEnum)

FIELDS = (
    "plan",
    "no",
    "key",
    "name_zh",
    "name_en",
    "category",
    "unit",
    "direction",
    "kind",
    "baseline_2020",
    "baseline_note",
    "target_2025",
    "target_change",
    "target_text",
    "attribute",
    "sensor_metric",
    "scope",
    "reference_value",
    "reference_date",
)


class IndicatorKind(StrEnum):
    """How an indicator's value behaves over the plan period."""

    LEVEL = "level"  # a rate or stock measured at a time
    CUMULATIVE = "cumulative"  # counted from the plan start
    RELATIVE_CHANGE = "relative_change"  # target given as a change against the 2020 value
    DYNAMIC = "dynamic"  # fluctuates year to year: judged by trend projection
    QUALITATIVE = "qualitative"  # achieved or not, judged by an observation's status
    CAP = "cap"  # must stay at or below (or, direction up, at or above) the target


class Direction(StrEnum):
    """Whether larger values are better (up) or smaller values are better (down)."""

    UP = "up"
    DOWN = "down"


class Attribute(StrEnum):
    """Binding 约束性 or expected 预期性; the district plan leaves it unspecified."""

    BINDING = "binding"
    EXPECTED = "expected"
    UNSPECIFIED = "unspecified"


class SensorMetric(StrEnum):
    """Indicators cityops computes from its own data (reports/monthly.py)."""

    LIGHTING_RATE = "lighting_rate"
    HEATING_COMPLAINT_DENSITY = "heating_complaint_density"
    CHARGER_SERVICE_RADIUS = "charger_service_radius"
    CHARGER_COUNT = "charger_count"


@dataclass(frozen=True, kw_only=True, slots=True)
class Indicator:
    """One plan indicator with its baseline, 2025 target and, if any, its sensor metric."""

    key: str
    plan: str
    no: int
    name_zh: str
    name_en: str
    category: str
    unit: str
    direction: Direction
    kind: IndicatorKind
    baseline: float | None
    baseline_note: str
    target: float | None
    target_change: float | None
    target_text: str
    attribute: Attribute
    sensor_metric: SensorMetric | None
    scope: str
    reference_value: float | None
    reference_date: date | None
    local: bool = False

    @property
    def resolved_target(self) -> float | None:
        """The absolute 2025 target; a relative one resolves to baseline × (1 + change)."""
        if self.target is not None:
            return self.target
        if self.target_change is not None and self.baseline is not None:
            # Rounded so that 0.69 × 0.9 is 0.621 and equality with an entered 0.621 holds.
            return round(self.baseline * (1 + self.target_change), 10)
        return None

    def as_row(self) -> dict[str, str]:
        """The indicator as a CSV row (the catalog file's columns)."""
        d = asdict(self)
        d["baseline_2020"] = d.pop("baseline")
        d["target_2025"] = d.pop("target")
        d.pop("local")
        return {k: _text(d[k]) for k in FIELDS}


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _float(row: Mapping[str, str], name: str, key: str) -> float | None:
    text = (row.get(name) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as err:
        raise ValidationError(f"indicator {key}: {name} {text!r} is not a number", name) from err
    if not math.isfinite(value):
        raise ValidationError(f"indicator {key}: {name} must be finite", name)
    return value


def _enum(cls: type[_E], row: Mapping[str, str], name: str, key: str) -> _E:
    text = (row.get(name) or "").strip()
    try:
        return cls(text)
    except ValueError as err:
        allowed = ", ".join(m.value for m in cls)
        raise ValidationError(
            f"indicator {key}: {name} {text!r} is not one of {allowed}", name
        ) from err


def indicator_from_row(row: Mapping[str, str], *, local: bool = False) -> Indicator:
    """Validate one catalog row (shipped CSV or local table) into an Indicator."""
    key = (row.get("key") or "").strip()
    if not key:
        raise ValidationError("indicator: key is required", "key")
    plan = (row.get("plan") or "").strip() or "local"
    no_text = (row.get("no") or "0").strip() or "0"
    try:
        no = int(no_text)
    except ValueError as err:
        raise ValidationError(f"indicator {key}: no {no_text!r} is not an integer", "no") from err
    name_zh = (row.get("name_zh") or "").strip()
    if not name_zh and not (row.get("name_en") or "").strip():
        raise ValidationError(f"indicator {key}: a Chinese or English name is required", "name")
    attribute_text = (row.get("attribute") or "").strip() or Attribute.UNSPECIFIED.value
    metric_text = (row.get("sensor_metric") or "").strip()
    ref_date_text = (row.get("reference_date") or "").strip()
    try:
        ref_date = date.fromisoformat(ref_date_text) if ref_date_text else None
    except ValueError as err:
        raise ValidationError(
            f"indicator {key}: reference_date {ref_date_text!r} is not YYYY-MM-DD", "reference_date"
        ) from err
    indicator = Indicator(
        key=key,
        plan=plan,
        no=no,
        name_zh=name_zh,
        name_en=(row.get("name_en") or "").strip(),
        category=(row.get("category") or "").strip(),
        unit=(row.get("unit") or "").strip(),
        direction=_enum(Direction, row, "direction", key),
        kind=_enum(IndicatorKind, row, "kind", key),
        baseline=_float(row, "baseline_2020", key),
        baseline_note=(row.get("baseline_note") or "").strip(),
        target=_float(row, "target_2025", key),
        target_change=_float(row, "target_change", key),
        target_text=(row.get("target_text") or "").strip(),
        attribute=_enum(Attribute, {"attribute": attribute_text}, "attribute", key),
        sensor_metric=(_enum(SensorMetric, {"m": metric_text}, "m", key) if metric_text else None),
        scope=(row.get("scope") or "").strip() or "district",
        reference_value=_float(row, "reference_value", key),
        reference_date=ref_date,
        local=local,
    )
    if indicator.target is not None and indicator.target_change is not None:
        raise ValidationError(
            f"indicator {key}: give target_2025 or target_change, not both", "target_change"
        )
    if indicator.target_change is not None and indicator.target_change <= -1:
        raise ValidationError(
            f"indicator {key}: target_change {indicator.target_change} would end at or below "
            "zero (write -0.10 for 10% below the baseline)",
            "target_change",
        )
    return indicator


def parse_csv(text: str, *, local: bool = False) -> list[Indicator]:
    """Indicators from catalog CSV text (lines starting with ``#`` are comments)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    missing = {"key", "direction", "kind"} - set(reader.fieldnames or [])
    if missing:
        raise ValidationError(f"indicator catalog: missing columns {', '.join(sorted(missing))}")
    out = [indicator_from_row(row, local=local) for row in reader]
    keys = [i.key for i in out]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValidationError(f"indicator catalog: duplicate keys {', '.join(dupes)}", "key")
    return out


def shipped_text() -> str:
    """The shipped catalog file's text."""
    return resources.files("reports").joinpath("data/indicators.csv").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Catalog:
    """The indicators in effect (shipped merged with local) and the version that names them."""

    indicators: tuple[Indicator, ...]
    version: str

    def get(self, key: str) -> Indicator:
        """The indicator with ``key``; ValidationError naming the known plans when unknown."""
        for indicator in self.indicators:
            if indicator.key == key:
                return indicator
        raise ValidationError(
            f"unknown indicator {key!r}; `cityops indicators list` shows the keys", "indicator"
        )

    def by_plan(self, plan: str | None) -> list[Indicator]:
        """Indicators of one plan (all when ``plan`` is None)."""
        return [i for i in self.indicators if plan is None or i.plan == plan]


def build(local: Iterable[Indicator] = ()) -> Catalog:
    """The shipped catalog plus ``local`` rows (a local row replaces a shipped one by key)."""
    text = shipped_text()
    shipped = parse_csv(text)
    local_list = sorted(local, key=lambda i: i.key)
    by_key = {i.key: i for i in shipped}
    for indicator in local_list:
        by_key[indicator.key] = replace(indicator, local=True)
    digest = hashlib.sha256(text.encode("utf-8"))
    for indicator in local_list:
        digest.update(orjson.dumps(indicator.as_row(), option=orjson.OPT_SORT_KEYS))
    order = {i.key: n for n, i in enumerate(shipped)}
    indicators = sorted(by_key.values(), key=lambda i: (order.get(i.key, len(order)), i.key))
    return Catalog(tuple(indicators), f"{EDITION}+{digest.hexdigest()[:12]}")

"""Alert rules as data: a versioned YAML file, validated at load; a bad reload keeps the old set.

A rules file looks like::

    version: 1
    rules:
      - name: manhole_low_battery
        type: threshold
        kind: manhole
        field: battery_pct
        op: "<"
        value: 15
        clear: 20        # hysteresis: resolves only once battery_pct >= 20
        for: 30m
        severity: warning

Every problem in a file is reported with the rule's position and name and the field, for example
``rules[3] 'manhole_low_battery': clear: must be above value for op '<'``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, Field, field_validator, model_validator

from alerts import datafile
from cityops import catalog
from cityops.catalog import FieldType, Kind
from cityops.errors import CityopsError

RULES_VERSION = 1
DEFAULT_RULES = "default.yaml"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class RulesError(CityopsError):
    """A rules file is invalid; the message names the rule and the field."""


class Severity(StrEnum):
    """How urgent an alert is; routing and case opening key on it."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


def parse_duration(value: Any) -> timedelta:
    """A duration from ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value))
        if match is None:
            raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 30m, 2h, 1d)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, pydantic.BeforeValidator(parse_duration)]


class _Rule(BaseModel):
    model_config = {"extra": "forbid", "frozen": True, "populate_by_name": True}

    name: str
    kind: Kind | None = None
    severity: Severity = Severity.WARNING
    for_: Duration = Field(default=timedelta(0), alias="for")
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    group_by: tuple[str, ...] = ("area_code",)
    active: Literal["always", "heating_season"] = "always"
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("use lower-case letters, digits and _ (a-z first, at most 64)")
        return value

    def _field_spec(self, field: str) -> catalog.FieldSpec:
        if self.kind is None:
            raise ValueError("this rule type needs a kind")
        spec = catalog.KINDS[self.kind].reading_field(field)
        if spec is None:
            raise ValueError(f"{field!r} is not a {self.kind.value} field")
        return spec


class Op(StrEnum):
    """Comparison of a threshold rule."""

    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


class ThresholdRule(_Rule):
    """A numeric field beyond ``value`` for ``for``; resolves once back past ``clear``."""

    type: Literal["threshold"]
    field: str
    op: Op
    value: float
    clear: float | None = None

    @model_validator(mode="after")
    def _check(self) -> ThresholdRule:
        spec = self._field_spec(self.field)
        if spec.type not in (FieldType.FLOAT, FieldType.INT):
            raise ValueError(f"field: {self.field!r} is not numeric")
        if self.clear is not None:
            below = self.op in (Op.LT, Op.LE)
            if (below and self.clear < self.value) or (not below and self.clear > self.value):
                side = "at or above" if below else "at or below"
                raise ValueError(f"clear: must be {side} value for op {self.op.value!r}")
        return self

    def breached(self, x: float) -> bool:
        """Whether ``x`` meets the firing condition."""
        return {
            Op.LT: x < self.value,
            Op.LE: x <= self.value,
            Op.GT: x > self.value,
            Op.GE: x >= self.value,
        }[self.op]

    def cleared(self, x: float) -> bool:
        """Whether ``x`` meets the clear condition (the reverse op against ``clear``)."""
        if self.breached(x):
            return False
        if self.clear is None:
            return True
        return x >= self.clear if self.op in (Op.LT, Op.LE) else x <= self.clear


class StateRule(_Rule):
    """An enum or boolean field in one of ``values`` for ``for``."""

    type: Literal["state"]
    field: str
    values: tuple[str | bool, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> StateRule:
        spec = self._field_spec(self.field)
        if spec.type is FieldType.BOOL:
            if not all(isinstance(v, bool) for v in self.values):
                raise ValueError(f"values: {self.field!r} is boolean; use true/false")
        elif spec.type is FieldType.ENUM:
            bad = [v for v in self.values if v not in (spec.allowed or ())]
            if bad:
                raise ValueError(f"values: {bad} not allowed for {self.field!r}")
        else:
            raise ValueError(f"field: {self.field!r} is not an enum or boolean field")
        return self


class NoDataRule(_Rule):
    """A device silent for ``intervals`` expected reporting intervals (offline)."""

    type: Literal["nodata"]
    intervals: int = Field(default=3, ge=1, le=1000)
    interval: Duration | None = None  # default: the kind's typical interval from the catalog


class AnomalyRule(_Rule):
    """An anomaly episode on the stream core's score of ``field`` (docs/alerts.md).

    The episode fires at the first reading that scores ``score`` or more and resolves once the
    score has stayed below ``clear`` for ``hold`` (in the readings' time): one alert per episode,
    not one per reading. ``for`` delays the firing as for any rule (default: none).
    """

    type: Literal["anomaly"]
    field: str
    score: float = Field(gt=0)
    clear: float | None = Field(default=None, gt=0)  # default: half of ``score``
    hold: Duration = timedelta(minutes=30)

    @model_validator(mode="after")
    def _check(self) -> AnomalyRule:
        from stream.state import STATE_FIELD

        spec = self._field_spec(self.field)
        if spec.type is not FieldType.FLOAT:
            raise ValueError(f"field: {self.field!r} is not a float field")
        if self.kind is not None and STATE_FIELD[self.kind] != self.field:
            raise ValueError(
                f"field: the stream core scores {STATE_FIELD[self.kind]!r} of a "
                f"{self.kind.value}, not {self.field!r}"
            )
        if self.clear is not None and self.clear >= self.score:
            raise ValueError("clear: must be below score")
        return self

    @property
    def clear_below(self) -> float:
        """The score under which the episode counts as calm."""
        return self.clear if self.clear is not None else self.score / 2


class ScheduleRule(_Rule):
    """Streetlight against its switching schedule: off while due on, or on in daylight."""

    type: Literal["schedule"]
    condition: Literal["off_while_due", "on_in_daylight"]

    @model_validator(mode="after")
    def _check(self) -> ScheduleRule:
        if self.kind is not Kind.STREETLIGHT:
            raise ValueError("kind: schedule rules apply to streetlight")
        return self


class GroupRule(_Rule):
    """Many members of one group (cabinet, compound, site) in ``member_rule`` at once."""

    type: Literal["group"]
    group_attribute: str
    member_rule: str
    min_fraction: float = Field(default=0.8, gt=0, le=1)
    min_members: int = Field(default=3, ge=1)
    inhibits_members: bool = True
    # Hold a member alert this long before notifying it while another member of its group is
    # also in member_rule (pending or firing): if the group alert fires meanwhile, the member
    # alert is inhibited instead of notified. 0s: never hold.
    hold_members: Duration = timedelta(0)

    @model_validator(mode="after")
    def _check(self) -> GroupRule:
        if self.kind is None:
            raise ValueError("kind: group rules need a kind")
        if self.hold_members > timedelta(0) and not self.inhibits_members:
            raise ValueError("hold_members: only applies when inhibits_members is true")
        attrs = {a.name for a in catalog.KINDS[self.kind].attributes}
        if self.group_attribute not in attrs:
            raise ValueError(
                f"group_attribute: {self.group_attribute!r} is not an attribute of "
                f"a {self.kind.value}"
            )
        return self


class AggregateRule(_Rule):
    """An area's rate from the stream core below ``below`` over ``window``."""

    type: Literal["aggregate"]
    metric: str
    below: float
    window: Duration = timedelta(hours=1)
    min_denominator: float = Field(default=1.0, ge=0)


class ComplaintSpikeRule(_Rule):
    """At least ``count`` complaints of ``category`` in one area within ``window``."""

    type: Literal["complaint_spike"]
    category: catalog.ComplaintCategory | None = None
    count: int = Field(ge=1)
    window: Duration = timedelta(hours=1)


Rule = Annotated[
    ThresholdRule
    | StateRule
    | NoDataRule
    | AnomalyRule
    | ScheduleRule
    | GroupRule
    | AggregateRule
    | ComplaintSpikeRule,
    Field(discriminator="type"),
]


class RuleSet(BaseModel):
    """A validated rules file."""

    model_config = {"extra": "forbid", "frozen": True}

    version: int
    rules: tuple[Rule, ...]

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != RULES_VERSION:
            raise ValueError(
                f"unsupported rules file version {value}; this cityops reads "
                f"version {RULES_VERSION}"
            )
        return value

    @model_validator(mode="after")
    def _unique_and_linked(self) -> RuleSet:
        seen: set[str] = set()
        for r in self.rules:
            if r.name in seen:
                raise ValueError(f"rule name {r.name!r} is used twice")
            seen.add(r.name)
        for r in self.rules:
            if isinstance(r, GroupRule) and r.member_rule not in seen:
                raise ValueError(
                    f"rule {r.name!r}: member_rule {r.member_rule!r} is not a rule in this file"
                )
        return self

    def by_name(self, name: str) -> Rule:
        """The rule called ``name``."""
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    def enabled(self) -> list[Rule]:
        """The rules that are switched on."""
        return [r for r in self.rules if r.enabled]


_TYPES = {
    "threshold",
    "state",
    "nodata",
    "anomaly",
    "schedule",
    "group",
    "aggregate",
    "complaint_spike",
}


def parse_rules(text: str, source: str = "rules") -> RuleSet:
    """Validate the text of a rules file; raise RulesError naming rule and field."""
    return datafile.parse(
        RuleSet,
        text,
        source,
        error=RulesError,
        shape="'version' and 'rules'",
        sections=("rules",),
        tags=_TYPES,
    )


def load_rules(path: Path | None = None) -> RuleSet:
    """Load a rules file, or the shipped defaults when ``path`` is None."""
    text, source = datafile.read(path, DEFAULT_RULES, error=RulesError, what="rules")
    return parse_rules(text, source)


class RuleHolder:
    """The active rule set; a reload with a bad file keeps the rules already in force."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.rules = load_rules(path)

    def reload(self) -> str | None:
        """Re-read the file; return None on success or the error while keeping the old rules."""
        try:
            self.rules = load_rules(self.path)
        except RulesError as err:
            return str(err)
        return None

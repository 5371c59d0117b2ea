"""Notification routing as data: receivers, routes, grouping, reminders and escalation levels.

A routes file looks like::

    version: 1
    defaults:
      group_by: [alertname, area_code]
      group_wait: 30s
      group_interval: 5m
      repeat_interval: 4h
    receivers:
      - name: duty_desk
        type: webhook
        url: http://duty.example/hook
      - name: supervisor
        type: email
        smtp_host: mail.example
        from: cityops@example
        to: [supervisor@example]
    routes:
      - name: covers_critical
        match: {kind: manhole, severity: critical}
        receivers: [duty_desk]
        escalation:
          - escalate_after: 30m
            receivers: [supervisor]

The first route whose ``match`` fits an alert takes it; ``continue: true`` lets later routes take
it as well. Every problem is reported with the item and the field, for example
``routes[1] 'covers_critical': receivers: unknown receiver 'duty'``.
"""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import pydantic
from pydantic import BaseModel, Field, field_validator, model_validator

from alerts import datafile
from alerts.model import AlertNotice
from alerts.rules import Duration, Severity
from cityops.errors import CityopsError

ROUTES_VERSION = 1
DEFAULT_ROUTES = "routes.yaml"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class RoutesError(CityopsError):
    """A routes file is invalid; the message names the item and the field."""


class _Item(BaseModel):
    model_config = {"extra": "forbid", "frozen": True, "populate_by_name": True}


def _slug(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError("use lower-case letters, digits and _ (a-z first, at most 64)")
    return value


class _Receiver(_Item):
    name: str
    send_resolved: bool = True
    timeout: Duration = timedelta(seconds=10)
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_initial: Duration = timedelta(seconds=1)
    backoff_max: Duration = timedelta(minutes=5)
    queue_size: int = Field(default=1000, ge=1, le=1_000_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _slug(value)

    @model_validator(mode="after")
    def _backoff(self) -> _Receiver:
        if self.backoff_initial <= timedelta(0):
            raise ValueError("backoff_initial: must be above 0")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max: must be at least backoff_initial")
        if self.timeout <= timedelta(0):
            raise ValueError("timeout: must be above 0")
        return self


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


class WebhookReceiver(_Receiver):
    """POST the cityops JSON notification to ``url``."""

    type: Literal["webhook"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class AlertmanagerReceiver(_Receiver):
    """POST the Prometheus Alertmanager webhook (version 4) payload to ``url``."""

    type: Literal["alertmanager"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    max_alerts: int = Field(default=0, ge=0, description="0: no limit; else truncate.")
    external_url: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class EmailReceiver(_Receiver):
    """Send a plain-text mail through an SMTP server."""

    type: Literal["email"]
    smtp_host: str = Field(min_length=1)
    smtp_port: int = Field(default=25, ge=1, le=65535)
    from_: str = Field(alias="from", min_length=3)
    to: tuple[str, ...] = Field(min_length=1)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password_env: str | None = Field(
        default=None, description="Environment variable holding the SMTP password."
    )

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError(f"{value!r} is not a mail address")
        return value

    @field_validator("to")
    @classmethod
    def _to(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if "@" not in a]
        if bad:
            raise ValueError(f"not mail addresses: {bad}")
        return value

    @model_validator(mode="after")
    def _tls(self) -> EmailReceiver:
        if self.ssl and self.starttls:
            raise ValueError("starttls: use either ssl or starttls, not both")
        return self


class MqttReceiver(_Receiver):
    """Publish to ``{topic_root}/alerts/{kind}/{area}`` on the cityops broker (settings.mqtt)."""

    type: Literal["mqtt"]
    topic_root: str = Field(default="cityops/v1", min_length=1)
    qos: int = Field(default=1, ge=0, le=2)
    retain: bool = False

    @field_validator("topic_root")
    @classmethod
    def _topic(cls, value: str) -> str:
        if any(c in value for c in "+#") or value.endswith("/"):
            raise ValueError("a topic root cannot contain + or # nor end with /")
        return value


Receiver = Annotated[
    WebhookReceiver | AlertmanagerReceiver | EmailReceiver | MqttReceiver,
    Field(discriminator="type"),
]

AnyReceiver = WebhookReceiver | AlertmanagerReceiver | EmailReceiver | MqttReceiver

_RECEIVER_TYPES = {"webhook", "alertmanager", "email", "mqtt"}


def _as_tuple(value: Any) -> Any:
    if isinstance(value, str | Severity):
        return (value,)
    return value


OneOrMany = Annotated[tuple[str, ...], pydantic.BeforeValidator(_as_tuple)]


class Match(_Item):
    """Which alerts a route takes: every given condition must hold (values within one: any)."""

    kind: OneOrMany = ()
    area_code: OneOrMany = ()
    severity: Annotated[tuple[Severity, ...], pydantic.BeforeValidator(_as_tuple)] = ()
    labels: dict[str, OneOrMany] = Field(default_factory=dict)

    def matches(self, notice: AlertNotice) -> bool:
        """Whether ``notice`` satisfies every condition."""
        if self.kind and notice.labels.get("kind") not in self.kind:
            return False
        if self.area_code and notice.labels.get("area_code") not in self.area_code:
            return False
        if self.severity and notice.severity not in self.severity:
            return False
        return all(notice.labels.get(k) in values for k, values in self.labels.items())


class EscalationLevel(_Item):
    """After ``escalate_after`` firing and unacknowledged, also notify ``receivers``."""

    escalate_after: Duration
    receivers: tuple[str, ...] = Field(min_length=1)


class Timing(_Item):
    """Grouping and repetition; a route's own values override the file's ``defaults``."""

    group_by: tuple[str, ...] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None


class Route(Timing):
    """Alerts that ``match`` go to ``receivers``, grouped by ``group_by``."""

    name: str
    match: Match = Match()
    receivers: tuple[str, ...] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")
    escalation: tuple[EscalationLevel, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _slug(value)

    @field_validator("escalation")
    @classmethod
    def _increasing(cls, value: tuple[EscalationLevel, ...]) -> tuple[EscalationLevel, ...]:
        afters = [lvl.escalate_after for lvl in value]
        if any(b <= a for a, b in itertools.pairwise(afters)):
            raise ValueError("escalate_after must increase from one level to the next")
        if afters and afters[0] <= timedelta(0):
            raise ValueError("escalate_after must be above 0")
        return value


class Defaults(_Item):
    """Timing used by every route that does not set its own."""

    group_by: tuple[str, ...] = ("alertname", "area_code")
    group_wait: Duration = timedelta(seconds=30)
    group_interval: Duration = timedelta(minutes=5)
    repeat_interval: Duration = timedelta(hours=4)


class RouteTiming(BaseModel):
    """A route's effective timing (its own values, else the defaults)."""

    model_config = {"frozen": True}

    group_by: tuple[str, ...]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta


class RoutesConfig(BaseModel):
    """A validated routes file."""

    model_config = {"extra": "forbid", "frozen": True}

    version: int
    defaults: Defaults = Defaults()
    receivers: tuple[Receiver, ...] = Field(min_length=1)
    routes: tuple[Route, ...] = Field(min_length=1)

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != ROUTES_VERSION:
            raise ValueError(
                f"unsupported routes file version {value}; this cityops reads "
                f"version {ROUTES_VERSION}"
            )
        return value

    @model_validator(mode="after")
    def _linked(self) -> RoutesConfig:
        names = [r.name for r in self.receivers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"receivers: names used twice: {dupes}")
        routes = [r.name for r in self.routes]
        dupes = sorted({n for n in routes if routes.count(n) > 1})
        if dupes:
            raise ValueError(f"routes: names used twice: {dupes}")
        known = set(names)
        for i, route in enumerate(self.routes):
            where = f"routes[{i}] {route.name!r}"
            unknown = [n for n in route.receivers if n not in known]
            if unknown:
                raise ValueError(f"{where}: receivers: unknown receiver(s) {unknown}")
            for j, level in enumerate(route.escalation):
                unknown = [n for n in level.receivers if n not in known]
                if unknown:
                    raise ValueError(
                        f"{where}: escalation[{j}].receivers: unknown receiver(s) {unknown}"
                    )
            timing = self.timing(route)
            if timing.group_interval <= timedelta(0):
                raise ValueError(f"{where}: group_interval: must be above 0")
            if timing.repeat_interval <= timedelta(0):
                raise ValueError(f"{where}: repeat_interval: must be above 0")
        return self

    def receiver(self, name: str) -> AnyReceiver:
        """The receiver called ``name``."""
        for r in self.receivers:
            if r.name == name:
                return r
        raise KeyError(name)

    def timing(self, route: Route) -> RouteTiming:
        """The effective grouping and repetition of ``route``."""
        d = self.defaults
        return RouteTiming(
            group_by=route.group_by if route.group_by is not None else d.group_by,
            group_wait=route.group_wait if route.group_wait is not None else d.group_wait,
            group_interval=(
                route.group_interval if route.group_interval is not None else d.group_interval
            ),
            repeat_interval=(
                route.repeat_interval if route.repeat_interval is not None else d.repeat_interval
            ),
        )

    def routes_for(self, notice: AlertNotice) -> list[Route]:
        """The routes that take ``notice``: the first match, plus later ones while ``continue``."""
        taken: list[Route] = []
        for route in self.routes:
            if route.match.matches(notice):
                taken.append(route)
                if not route.continue_:
                    break
        return taken


def parse_routes(text: str, source: str = "routes") -> RoutesConfig:
    """Validate the text of a routes file; raise RoutesError naming the item and field."""
    return datafile.parse(
        RoutesConfig,
        text,
        source,
        error=RoutesError,
        shape="'version', 'receivers' and 'routes'",
        sections=("receivers", "routes"),
        tags=_RECEIVER_TYPES,
    )


def load_routes(path: Path | None = None) -> RoutesConfig:
    """Load a routes file, or the shipped defaults when ``path`` is None."""
    text, source = datafile.read(path, DEFAULT_ROUTES, error=RoutesError, what="routes")
    return parse_routes(text, source)

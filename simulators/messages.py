"""The MQTT contract as the simulators speak it: topics and payloads for one tick's output.

Devices behind a concentrator are reported in one gateway message per tick in the ThingsBoard
gateway shape; direct devices publish one reading per message on their own topic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from cityops.catalog import Kind
from simulators.engine import Reading, StatusChange, TickOutput
from simulators.hotline import SOURCE

DEFAULT_PREFIX = "cityops/v1"


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """One MQTT publication; ``sender`` is the device or gateway whose credentials it needs."""

    topic: str
    payload: bytes
    sender: str | None


def telemetry_topic(kind: Kind | str, device_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``cityops/v1/{kind}/{device_id}/telemetry``."""
    return f"{prefix}/{Kind(kind).value}/{device_id}/telemetry"


def status_topic(kind: Kind | str, device_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``cityops/v1/{kind}/{device_id}/status``."""
    return f"{prefix}/{Kind(kind).value}/{device_id}/status"


def gateway_topic(gateway_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``cityops/v1/gateway/{gateway_id}/telemetry``."""
    return f"{prefix}/gateway/{gateway_id}/telemetry"


def complaints_topic(source: str = SOURCE, prefix: str = DEFAULT_PREFIX) -> str:
    """``cityops/v1/hotline/{source}/complaints``."""
    return f"{prefix}/hotline/{source}/complaints"


def status_payload(online: bool, ts_ms: int | None) -> bytes:
    """``{"online": ..., "ts": ...}`` (no ts in a last will: the broker sends it later)."""
    body: dict[str, Any] = {"online": online}
    if ts_ms is not None:
        body["ts"] = ts_ms
    return orjson.dumps(body)


def _status(s: StatusChange, prefix: str) -> Message:
    return Message(
        topic=status_topic(s.kind, s.device_id, prefix),
        payload=status_payload(s.online, s.ts_ms),
        sender=s.device_id,
    )


def encode(out: TickOutput, prefix: str = DEFAULT_PREFIX) -> Iterator[Message]:
    """The messages of one tick: status changes first, then readings, then complaints."""
    for s in out.statuses:
        if s.online:
            yield _status(s, prefix)
    batches: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in out.readings:
        if r.gateway_id is not None:
            batches.setdefault(r.gateway_id, {}).setdefault(r.device_id, []).append(
                {"ts": r.ts, "values": r.values}
            )
            continue
        yield _direct(r, prefix)
    for gateway_id, body in batches.items():
        yield Message(
            topic=gateway_topic(gateway_id, prefix), payload=orjson.dumps(body), sender=gateway_id
        )
    for s in out.statuses:
        if not s.online:
            yield _status(s, prefix)
    for c in out.complaints:
        yield Message(topic=complaints_topic(prefix=prefix), payload=orjson.dumps(c), sender=None)


def _direct(r: Reading, prefix: str) -> Message:
    return Message(
        topic=telemetry_topic(r.kind, r.device_id, prefix),
        payload=orjson.dumps({"ts": r.ts, "values": r.values}),
        sender=r.device_id,
    )

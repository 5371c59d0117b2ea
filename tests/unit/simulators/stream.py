"""Decoding a simulator stream the way a subscriber sees it: topics and JSON payloads."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from simulators.messages import DEFAULT_PREFIX, Message


@dataclass(frozen=True)
class Row:
    """One decoded reading."""

    kind: str
    device_id: str
    ts_ms: int
    values: dict[str, Any]
    via_gateway: str | None


@dataclass
class Stream:
    """Everything a subscriber received, grouped for checks."""

    readings: list[Row] = field(default_factory=list)
    statuses: list[tuple[str, str, bool, int]] = field(default_factory=list)
    complaints: list[dict[str, Any]] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    def by_device(self) -> dict[str, list[Row]]:
        """Readings per device in time order."""
        out: dict[str, list[Row]] = defaultdict(list)
        for r in sorted(self.readings, key=lambda r: r.ts_ms):
            out[r.device_id].append(r)
        return out


def ts_ms(value: int | str) -> int:
    """Epoch ms from an epoch-ms number or an RFC 3339 string."""
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def decode(messages: Iterable[Message], prefix: str = DEFAULT_PREFIX) -> Stream:
    """Decode (topic, payload) pairs by the MQTT contract; fail on anything off-contract."""
    return decode_raw(((m.topic, m.payload) for m in messages), prefix)


def decode_raw(pairs: Iterable[tuple[str, bytes]], prefix: str = DEFAULT_PREFIX) -> Stream:
    """Decode raw topic/payload pairs."""
    stream = Stream()
    for topic, payload in pairs:
        stream.topics.append(topic)
        assert topic.startswith(prefix + "/"), topic
        parts = topic[len(prefix) + 1 :].split("/")
        assert len(parts) == 3, topic
        kind, ident, leaf = parts
        body = orjson.loads(payload)
        if kind == "gateway":
            assert leaf == "telemetry"
            assert isinstance(body, dict)
            for device_id, items in body.items():
                for item in items:
                    stream.readings.append(
                        Row(
                            _kind_of(device_id), device_id, ts_ms(item["ts"]), item["values"], ident
                        )
                    )
        elif kind == "hotline":
            assert leaf == "complaints"
            stream.complaints.extend(body if isinstance(body, list) else [body])
        elif leaf == "telemetry":
            items = body if isinstance(body, list) else [body]
            for item in items:
                stream.readings.append(Row(kind, ident, ts_ms(item["ts"]), item["values"], None))
        else:
            assert leaf == "status", topic
            stream.statuses.append((kind, ident, bool(body["online"]), int(body.get("ts", 0))))
    return stream


_PREFIX_KIND = {"sl": "streetlight", "mh": "manhole", "ht": "heating", "ch": "charger"}


def _kind_of(device_id: str) -> str:
    return _PREFIX_KIND[device_id.split("-", 1)[0]]

"""Storing a hotline complaint: the one write path shared by MQTT ingest and the HTTP API."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# A complaint is stored once per complaint_id: a repeat (an MQTT redelivery, a hotline system
# posting twice) returns no row, so the caller knows it was not new.
INSERT_COMPLAINT_SQL = """
INSERT INTO complaints (complaint_id, received_at, category, area_code, address, lat, lon,
                        device_id, text, status, source)
VALUES (%(complaint_id)s, %(received_at)s, %(category)s, %(area_code)s, %(address)s, %(lat)s,
        %(lon)s, %(device_id)s, %(text)s, %(status)s, %(source)s)
ON CONFLICT (complaint_id) DO NOTHING
RETURNING complaint_id
"""

# What a complaint's content is, for telling a redelivery (same content: a duplicate) from a
# conflict (same id, other content: another record that must not vanish silently).
CONTENT_FIELDS = (
    "received_at",
    "category",
    "area_code",
    "address",
    "lat",
    "lon",
    "device_id",
    "text",
    "status",
    "source",
)
STORED_COMPLAINT_SQL = f"""
SELECT {", ".join(CONTENT_FIELDS)} FROM complaints WHERE complaint_id = %s
"""


def differences(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The content fields whose values differ between a stored complaint and a new one."""
    return [name for name in CONTENT_FIELDS if stored.get(name) != new.get(name)]


def conflict_detail(complaint_id: str, stored: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """A dead letter's detail naming each differing field with both versions."""
    parts = [
        f"{name}: stored {_show(stored.get(name))}, new {_show(new.get(name))}"
        for name in differences(stored, new)
    ]
    return f"complaint {complaint_id!r} is already stored with other content; " + "; ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return repr(value)

"""Render the field reference (docs/catalog.md) from the device catalog."""

from __future__ import annotations

from collections.abc import Iterable

from cityops import catalog

HEADER = """# Field reference

<!-- Generated from cityops/catalog.py by `cityops catalog docs`; do not edit by hand.
     tests/unit/test_catalog_docs.py fails when this file is out of date. -->

This is the device catalog: the fields every kind reports over MQTT
(`cityops/v1/{kind}/{device_id}/telemetry`, inside `values`), the registry attributes of each kind,
hotline complaints, and the registry columns. Ingest accepts exactly these fields: an unknown
field, a wrong type, a value outside its range or a missing required field dead-letters the
reading with the reason. Every reading also carries `ts` (RFC 3339 or epoch milliseconds; the
receive time when absent).
"""


def _table(fields: Iterable[catalog.FieldSpec]) -> list[str]:
    lines = [
        "| field | type | unit | allowed values / range | required | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for f in fields:
        lines.append(
            f"| `{f.name}` | {f.type.value} | {f.unit or ''} | {f.describe_range()} | "
            f"{'yes' if f.required else ''} | {f.description} |"
        )
    return lines


def render_markdown() -> str:
    """The whole field reference as Markdown."""
    out = [HEADER]
    out.append("## Device kinds\n")
    for spec in catalog.KINDS.values():
        out.append(f"### `{spec.kind.value}`: {spec.title}\n")
        out.append(
            f"{spec.description} Typical reporting interval: {spec.typical_interval_s} s. "
            f"Stored in `{spec.table}`.\n"
        )
        out.append("Reading fields:\n")
        out.extend(_table(spec.readings))
        out.append("")
        out.append("Registry attributes (`devices.attributes`):\n")
        out.extend(_table(spec.attributes))
        out.append("")
    out.append("## Hotline complaints\n")
    out.append(
        "Published on `cityops/v1/hotline/{source}/complaints`, one record or a list; "
        "stored once per `complaint_id`.\n"
    )
    out.extend(_table(catalog.COMPLAINT_FIELDS))
    out.append("")
    out.append("## Registry: devices\n")
    out.append(
        "Columns of a device import file (CSV or JSON); kind-specific attributes follow "
        "as further columns (CSV) or inside `attributes` (JSON).\n"
    )
    out.extend(_table(catalog.DEVICE_FIELDS))
    out.append("")
    out.append("## Registry: areas\n")
    out.extend(_table(catalog.AREA_FIELDS))
    out.append("")
    return "\n".join(out)

"""Render the field reference (docs/catalog.md) from the device catalog."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping

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


# --- the docs' examples against the catalog ----------------------------------------------------

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_INLINE = re.compile(r"`([^`\n]+)`")
_ID_PATTERNS = (
    re.compile(r"[?&]device_id=([^&\s\"'`]+)"),
    re.compile(r"/devices/([^/?\s\"'`]+)"),
    re.compile(r"\"device_id\"\s*:\s*\"([^\"]+)\""),
    re.compile(r"--device(?:-id)?[ =]([^\s\"'`]+)"),
)
_FIELD_PATTERNS = (
    re.compile(r"[?&]fields?=([^&\s\"'`]+)"),
    re.compile(r"^\s*-?\s*field:\s*([A-Za-z_][\w]*)", re.M),
    re.compile(r"--fields?[ =]([^\s\"'`]+)"),
)
_VALUES = re.compile(r"\"values\"\s*:\s*\{([^{}]*)\}")
_KEY = re.compile(r"\"([A-Za-z_]\w*)\"\s*:")
_KIND_PATTERNS = (
    re.compile(r"[?&]kind=([^&\s\"'`]+)"),
    re.compile(r"--kind[ =]([^\s\"'`]+)"),
)
# Placeholders, not examples: {device_id}, <id>, $DEV, ...
_PLACEHOLDER = re.compile(r"[{}<>$*…\[\]]|\.\.\.|^x+$", re.I)
# Paths under /devices/ that are routes, not device ids.
_ROUTES = frozenset({"import"})


def _code_spans(text: str) -> list[tuple[int, str]]:
    """The fenced blocks and inline code of a Markdown text, each with its first line number."""
    spans: list[tuple[int, str]] = []
    rest = text
    for m in _FENCE.finditer(text):
        spans.append((text.count("\n", 0, m.start()) + 1, m.group(0)))
    rest = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for m in _INLINE.finditer(rest):
        spans.append((rest.count("\n", 0, m.start()) + 1, m.group(1)))
    return spans


def check_examples(texts: Mapping[str, str], known_ids: Collection[str]) -> list[str]:
    """Problems in the examples of Markdown ``texts`` (name -> text), one message each.

    Device ids in example requests and payloads must be devices of ``known_ids`` (the demo's
    registry, so every example runs against ``cityops demo``); reading fields must be fields of
    the catalog and kinds catalog kinds.
    """
    ids = frozenset(known_ids)
    problems: list[str] = []
    for name, text in texts.items():
        for first, span in _code_spans(text):
            for pos, message in _span_problems(span, ids):
                problems.append(f"{name}:{first + span.count(chr(10), 0, pos)}: {message}")
    return problems


def _span_problems(span: str, known_ids: frozenset[str]) -> list[tuple[int, str]]:
    """(offset, message) of each bad device id, reading field or kind in one code span."""
    fields = {f.name for spec in catalog.KINDS.values() for f in spec.readings}
    kinds = {k.value for k in catalog.KINDS} | {"gateway"}
    out: list[tuple[int, str]] = []
    for pattern in _ID_PATTERNS:
        for m in pattern.finditer(span):
            value = m.group(1)
            if not _PLACEHOLDER.search(value) and value not in known_ids | _ROUTES:
                example = min(known_ids, default="")
                out.append(
                    (m.start(), f"device id {value!r} is not a device of the demo's registry "
                     f"(e.g. {example})")
                )  # fmt: skip
    names: list[tuple[int, str]] = []
    for pattern in _FIELD_PATTERNS:
        for m in pattern.finditer(span):
            names += [(m.start(), n) for n in m.group(1).split(",") if n]
    for m in _VALUES.finditer(span):
        names += [(m.start(), k) for k in _KEY.findall(m.group(1))]
    out += [
        (pos, f"{field!r} is no reading field of the catalog")
        for pos, field in names
        if not _PLACEHOLDER.search(field) and field not in fields
    ]
    for pattern in _KIND_PATTERNS:
        for m in pattern.finditer(span):
            if not _PLACEHOLDER.search(m.group(1)) and m.group(1) not in kinds:
                out.append((m.start(), f"{m.group(1)!r} is no device kind"))
    return out

"""Versioned YAML data files (rules, routes): load, validate, and name the item and field of errors.

Both the rules file and the routes file are lists of named items under top-level keys. An error
reads ``rules[3] 'low_battery': clear: must be at or above value``: the list, the index, the
item's ``name`` when it has one, then the field path inside the item (without the tag pydantic
inserts for a discriminated union).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from cityops.errors import CityopsError

M = TypeVar("M", bound=pydantic.BaseModel)


def describe(
    err: pydantic.ValidationError,
    raw: Mapping[str, Any],
    sections: Collection[str],
    tags: Collection[str] = (),
) -> str:
    """One line naming every problem by list item (and its name) and field."""
    problems = []
    for e in err.errors():
        loc = list(e["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] in sections and isinstance(loc[1], int):
            section, idx = str(loc[0]), loc[1]
            items = raw.get(section)
            name = None
            if isinstance(items, list) and idx < len(items) and isinstance(items[idx], dict):
                name = items[idx].get("name")
            where = f"{section}[{idx}]" + (f" {name!r}" if name else "")
            rest = loc[2:]
            if rest and isinstance(rest[0], str) and rest[0] in tags:
                rest = rest[1:]
            loc = rest
        field = ".".join(str(p) for p in loc)
        msg = e["msg"].removeprefix("Value error, ")
        parts = [p for p in (where, field) if p]
        problems.append(f"{': '.join(parts)}: {msg}" if parts else msg)
    return "; ".join(problems)


def parse(
    model: type[M],
    text: str,
    source: str,
    *,
    error: type[CityopsError],
    shape: str,
    sections: Collection[str],
    tags: Collection[str] = (),
) -> M:
    """Validate YAML ``text`` as ``model``; raise ``error`` naming item and field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise error(f"{source}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise error(f"{source}: expected a mapping with {shape}")
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as err:
        raise error(f"{source}: {describe(err, raw, sections, tags)}") from err


def read(
    path: Path | None, shipped: str, *, error: type[CityopsError], what: str
) -> tuple[str, str]:
    """The text and source name of ``path``, or of the shipped ``alerts/rules/<shipped>``."""
    if path is None:
        text = (resources.files("alerts") / "rules" / shipped).read_text(encoding="utf-8")
        return text, f"alerts/rules/{shipped}"
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as err:
        raise error(f"cannot read {what} file {path}: {err}") from err

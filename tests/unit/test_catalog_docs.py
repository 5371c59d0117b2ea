"""docs/catalog.md is generated from the catalog and must be current."""

from __future__ import annotations

from pathlib import Path

from cityops import catalog
from cityops.catalog_docs import render_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "catalog.md"


def test_field_reference_is_current() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_markdown(), (
        "docs/catalog.md is out of date: run `cityops catalog docs`"
    )


def test_reference_mentions_every_field() -> None:
    text = render_markdown()
    for spec in catalog.KINDS.values():
        for f in (*spec.readings, *spec.attributes):
            assert f"`{f.name}`" in text
    for status in catalog.OcppStatus:
        assert f"`{status.value}`" in text

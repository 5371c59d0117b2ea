"""`cityops catalog` and `cityops config`: the field reference and the effective settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cityops import catalog
from cityops.cli.common import err_console, out, settings_of

catalog_app = typer.Typer(help="The device catalog (fields, units, ranges).", no_args_is_help=True)
config_app = typer.Typer(help="Effective settings.", no_args_is_help=True)

DEFAULT_DOCS = Path("docs/catalog.md")


@catalog_app.command("docs")
def catalog_docs(
    path: Annotated[Path, typer.Option(help="Where to write the field reference.")] = DEFAULT_DOCS,
    check: Annotated[bool, typer.Option(help="Only check that the file is current.")] = False,
) -> None:
    """Write (or check) the field reference generated from the catalog."""
    from cityops.catalog_docs import render_markdown

    text = render_markdown()
    if check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            err_console.print(f"{path} is out of date; run `cityops catalog docs`")
            raise typer.Exit(1)
        out.print(f"{path} is current")
        _check_examples(path.parent)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    out.print(f"wrote {path}")


def _check_examples(docs: Path) -> None:
    """The examples of README.md and docs/*.md name demo devices and catalog fields only."""
    from cityops.catalog_docs import check_examples
    from simulators import scenario

    demo = scenario.generate(scenario.scenario_spec("pilot", None), seed=7)
    ids = {str(d) for t in demo.tables.values() for d in t.device_id.tolist()}
    files = [docs.parent / "README.md", *sorted(docs.glob("*.md"))]
    texts = {str(f): f.read_text(encoding="utf-8") for f in files if f.exists()}
    problems = check_examples(texts, ids)
    for problem in problems:
        err_console.print(problem, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    out.print(f"examples in {len(texts)} documents name catalog devices and fields only")


@catalog_app.command("show")
def catalog_show(kind: Annotated[str, typer.Argument(help="Device kind.")]) -> None:
    """Print the reading fields of one kind."""
    spec = catalog.kind_spec(kind)
    table = Table("field", "type", "unit", "range", "required")
    for f in spec.readings:
        table.add_row(
            f.name, f.type.value, f.unit or "", f.describe_range(), "yes" if f.required else ""
        )
    out.print(table)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective settings (passwords masked)."""
    settings = settings_of(ctx)
    data: dict[str, Any] = settings.model_dump(mode="json")
    out.print_json(json.dumps(data))

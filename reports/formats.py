"""Report output formats: names, media types, file suffixes and the dispatcher."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from cityops.errors import ValidationError


class Format(StrEnum):
    """A monthly report output format."""

    JSON = "json"
    CSV = "csv"
    XLSX = "xlsx"
    HTML = "html"
    PDF = "pdf"


MEDIA_TYPES = {
    Format.JSON: "application/json",
    Format.CSV: "text/csv; charset=utf-8",
    Format.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    Format.HTML: "text/html; charset=utf-8",
    Format.PDF: "application/pdf",
}


def parse_formats(text: str) -> list[Format]:
    """``xlsx,pdf,json`` → formats in order, without repeats; ValidationError if unknown."""
    out: list[Format] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        try:
            fmt = Format(part)
        except ValueError as err:
            allowed = ", ".join(f.value for f in Format)
            raise ValidationError(f"format {part!r} is not one of {allowed}", "format") from err
        if fmt not in out:
            out.append(fmt)
    if not out:
        raise ValidationError("format: name at least one of json, csv, xlsx, html, pdf", "format")
    return out


def file_name(report: dict[str, Any], fmt: Format) -> str:
    """``cityops-monthly-<scope>-<YYYY-MM>.<fmt>``."""
    return f"cityops-monthly-{report['scope']['code']}-{report['month']}.{fmt.value}"


def render(report: dict[str, Any], fmt: Format) -> bytes:
    """The report in one format (PDF needs chromium; see reports.render_html.to_pdf)."""
    from reports import render_html, render_text, render_xlsx

    if fmt is Format.JSON:
        return render_text.to_json(report)
    if fmt is Format.CSV:
        return render_text.to_csv(report)
    if fmt is Format.XLSX:
        return render_xlsx.to_xlsx(report)
    html = render_html.to_html(report)
    return html if fmt is Format.HTML else render_html.to_pdf(html)

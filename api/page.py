"""The operations page: static assets shipped with the package, served by the API app.

``/`` is the page; ``/static/<name>`` its scripts and styles (files of the ``api/static`` package
folder only). The page needs no key to load: it asks for one and calls the API with it.
"""

from __future__ import annotations

import re
from importlib import resources

from fastapi import APIRouter, Response

from api.errors import not_found

router = APIRouter(include_in_schema=False)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# The page is small and changes with releases; revalidating each load keeps it current.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def read_asset(name: str) -> tuple[bytes, str]:
    """An asset's bytes and media type; ApiError 404 for anything that is not a shipped file."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if not _NAME.match(name) or ".." in name or suffix not in _TYPES:
        raise not_found(f"no such asset: {name}")
    entry = resources.files("api") / "static" / name
    if not entry.is_file():
        raise not_found(f"no such asset: {name}")
    return entry.read_bytes(), _TYPES[suffix]


@router.get("/")
def index() -> Response:
    """The operations page."""
    body, media = read_asset("index.html")
    headers = {
        **_HEADERS,
        # Everything the page loads comes from this server: no CDN, no inline script.
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; connect-src 'self'",
    }
    return Response(body, media_type=media, headers=headers)


@router.get("/static/{name}")
def asset(name: str) -> Response:
    """A script, style or image of the page."""
    body, media = read_asset(name)
    return Response(body, media_type=media, headers=_HEADERS)

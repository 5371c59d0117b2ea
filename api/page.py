"""The operations page: static assets shipped with the package, served by the API app."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()

"""Monthly reports over HTTP (`/api/v1/reports/...`)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()

"""Live feed over Server-Sent Events: alert changes, per-area snapshots, chosen devices."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

router = APIRouter()


class LiveHub:
    """Background sources of live events, shared by every connected client."""

    def __init__(self, settings: Any, pool: Any) -> None:
        self.settings = settings
        self.pool = pool

    async def start(self) -> None:
        """Start the background sources."""

    async def stop(self) -> None:
        """Stop the background sources and close every client stream."""

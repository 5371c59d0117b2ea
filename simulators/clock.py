"""Simulated time: a start instant, a fixed tick and a speed factor against the wall clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime


def to_ms(ts: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    if ts.tzinfo is None:
        raise ValueError("naive datetime: simulated time is always timezone-aware")
    return int(ts.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as an RFC 3339 UTC string with milliseconds."""
    return from_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(kw_only=True)
class SimClock:
    """Paces simulated time against the wall clock.

    ``speed`` is simulated seconds per wall second (1 = real time, 60 = an hour a minute); 0 runs
    as fast as the consumer allows. Generated content never depends on the wall clock: only
    *when* a tick is released does.
    """

    start_ms: int
    speed: float
    _wall0: float = field(default_factory=time.monotonic)

    def due(self, sim_ms: int) -> float:
        """The monotonic wall time at which simulated time ``sim_ms`` is due."""
        if self.speed <= 0:
            return self._wall0
        return self._wall0 + (sim_ms - self.start_ms) / 1000 / self.speed

    def wait_until(self, sim_ms: int) -> float:
        """Sleep until simulated time ``sim_ms`` is due; return how far behind we are (s)."""
        if self.speed <= 0:
            return 0.0
        due = self._wall0 + (sim_ms - self.start_ms) / 1000 / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
            return 0.0
        return -delay

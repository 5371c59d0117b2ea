"""One clock per process: everything that judges time reads "now" here.

No-data, for-durations, hour completeness, escalation, case SLAs and the receive time ingest
stamps on each message all take the current instant from :func:`now`. In production that is the
wall clock. ``cityops demo`` (and tests) install a :class:`SimulatedClock` instead, driven by
the simulators in simulated time, so that a simulation that starts hours before the wall clock,
or falls behind its pace on a busy machine, is judged in its own time: no "device silent" storm
because the engine's clock ran ahead of the data.
"""

from __future__ import annotations

import threading
import time as _time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Anything with ``now()`` returning an aware UTC datetime."""

    def now(self) -> datetime:
        """The current instant."""
        ...


class WallClock:
    """The real time (production)."""

    def now(self) -> datetime:
        """The current instant, UTC."""
        return datetime.now(UTC)


class SimulatedClock:
    """Simulated time as far as the data has got: driven by the simulator and by ingest.

    ``release(t)`` is called by the simulator once the messages of simulated instant ``t`` are
    sent; ``observe(t)`` by the pipeline for the newest reading time of each committed batch.
    "Now" is the newest observed time, never beyond what the simulator released (a device with
    a skewed clock cannot move it ahead) and never backwards. So when the simulator or ingest
    falls behind on a busy machine, time waits for the data instead of running ahead of it, and
    a device is judged silent only when readings of later instants arrived without it.
    Before any data it reads ``start``.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("naive datetime: the clock is always timezone-aware")
        self._lock = threading.Lock()
        self.start_ms = int(start.timestamp() * 1000)
        self._released_ms = self.start_ms
        self._now_ms = self.start_ms

    def release(self, t_ms: int) -> None:
        """The simulator sent everything up to simulated instant ``t_ms``."""
        with self._lock:
            self._released_ms = max(self._released_ms, t_ms)

    def observe(self, t_ms: int) -> None:
        """Data up to ``t_ms`` was committed; now moves there (at most to the released time)."""
        with self._lock:
            self._now_ms = max(self._now_ms, min(t_ms, self._released_ms))

    def sent_ms(self) -> int:
        """How far the simulator has sent: the simulated instant a message arriving now left."""
        with self._lock:
            return self._released_ms

    def now_ms(self) -> int:
        """The current simulated instant, epoch milliseconds."""
        with self._lock:
            return self._now_ms

    def now(self) -> datetime:
        """The current simulated instant."""
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)


_lock = threading.Lock()
_current: Clock = WallClock()


def install(clock: Clock) -> Clock:
    """Make ``clock`` the process clock; return the one it replaces (to restore it)."""
    global _current
    with _lock:
        previous, _current = _current, clock
    return previous


def reset() -> None:
    """Back to the wall clock."""
    install(WallClock())


def current() -> Clock:
    """The process clock."""
    return _current


def now() -> datetime:
    """The current instant of the process clock (aware UTC)."""
    return _current.now()


def now_ms() -> int:
    """The current instant of the process clock, epoch milliseconds."""
    clock = _current
    if isinstance(clock, SimulatedClock):
        return clock.now_ms()
    if isinstance(clock, WallClock):
        return _time.time_ns() // 1_000_000
    return int(clock.now().timestamp() * 1000)


def receive_ms() -> int:
    """The receive time to stamp on a message arriving now, epoch milliseconds.

    The wall clock in production. In simulated time the instant the simulator has sent up to:
    a message is received when it was sent, not when a lagging ingest got round to it, so a
    busy machine does not stretch the gaps between a device's receive times.
    """
    clock = _current
    if isinstance(clock, SimulatedClock):
        return clock.sent_ms()
    return now_ms()


def seconds() -> float:
    """The current instant of the process clock, epoch seconds (``time.time`` style)."""
    return now_ms() / 1000

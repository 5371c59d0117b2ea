"""The batch being assembled: rows per kind, dead letters, acks, bounded by rows and by time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from cityops.catalog import Kind

ReadingRow = tuple[Any, ...]  # (device_id, ts_ms, *catalog fields, received_ms)


class Delivery(NamedTuple):
    """One MQTT message as it arrived: what to decode and how to acknowledge it.

    (A named tuple: built once per message on paho's network thread, where it is cheapest.)
    """

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_ms: int


def storable_text(text: str) -> str:
    """``text`` as PostgreSQL text can hold it: NUL as ``\\u0000``, lone surrogates escaped.

    PostgreSQL text cannot contain NUL, and a lone surrogate cannot be encoded as UTF-8; either
    would make the dead letter itself fail to save. The escaped form names the character.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message or reading, as stored in ``dead_letters``."""

    received_ms: int
    topic: str
    payload: bytes
    reason: str
    detail: str


@dataclass(slots=True)
class PendingBatch:
    """Everything decoded since the last commit, in arrival order."""

    readings: dict[Kind, list[ReadingRow]] = field(default_factory=dict)
    # per kind, beside ``readings``: each reading's device position hint (DeviceEntry.position)
    positions: dict[Kind, list[int]] = field(default_factory=dict)
    statuses: list[tuple[str, str, bool, int, int]] = field(default_factory=list)
    complaints: list[dict[str, Any]] = field(default_factory=list)
    # per complaint: (topic, received_ms, the record as JSON), so a conflict can be dead-lettered
    complaint_origins: list[tuple[str, int, bytes]] = field(default_factory=list)
    registrations: list[tuple[str, Kind, str]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    row_count: int = 0
    readings_received: int = 0
    skipped: int = 0  # readings/messages left to another partition's worker (ingest.partitions)
    started: float | None = None  # monotonic time of the first message
    first_received: datetime | None = None

    def add_reading(self, kind: Kind, row: ReadingRow, position: int = -1) -> None:
        """Append one validated reading row (``position``: its device's DeviceEntry.position)."""
        rows = self.readings.get(kind)
        if rows is None:
            rows = self.readings[kind] = []
            self.positions[kind] = []
        rows.append(row)
        self.positions[kind].append(position)
        self.row_count += 1

    def add_status(self, device_id: str, kind: str, online: bool, ts_ms: int, recv: int) -> None:
        """Append a device's online/offline report."""
        self.statuses.append((device_id, kind, online, ts_ms, recv))
        self.row_count += 1

    def add_complaint(
        self,
        complaint: dict[str, Any],
        *,
        topic: str = "",
        received_ms: int = 0,
        record: bytes = b"",
    ) -> None:
        """Append a validated complaint, with where it came from (for a conflict's dead letter)."""
        self.complaints.append(complaint)
        self.complaint_origins.append((topic, received_ms, record))
        self.row_count += 1

    def register(self, device_id: str, kind: Kind, area_code: str) -> None:
        """Register an unknown device in the same transaction as its first readings."""
        self.registrations.append((device_id, kind, area_code))

    def dead_letter(
        self, received_ms: int, topic: str, payload: bytes, reason: str, detail: str
    ) -> None:
        """Append a dead letter (topic and detail made storable as PostgreSQL text)."""
        self.dead_letters.append(
            DeadLetter(
                received_ms, storable_text(topic), payload, str(reason), storable_text(detail)
            )
        )
        self.row_count += 1

    def add_complaint_origin(self, topic: str, received_ms: int, record: bytes) -> None:
        """Remember where the last added complaint came from (for a conflict's dead letter)."""
        self.complaint_origins.append((topic, received_ms, record))

    @property
    def empty(self) -> bool:
        """Nothing to write and nothing to acknowledge."""
        return not self.deliveries and self.row_count == 0 and not self.registrations

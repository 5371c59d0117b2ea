"""Area partitions: which worker of a scaled-out ingest keeps which areas (docs/scaling.md).

The kernel holds the rule so that every stage of a worker agrees on it: ingest writes only the
readings of its partition's areas, and the stream core and the alert engine in the same process
load only those areas' devices (their per-sensor state and per-area sums need all of an area's
readings and nothing else). The hash is CRC-32, stable across processes and machines (Python's
``hash`` of a string is salted per process).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from cityops.settings import IngestSettings


def partition_of(key: str, partitions: int) -> int:
    """The partition (0..partitions-1) that owns ``key``."""
    return zlib.crc32(key.encode("utf-8")) % partitions


@dataclass(frozen=True, slots=True)
class Partition:
    """Worker ``index`` of ``count``: which keys this worker owns."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} of {self.count} does not exist")

    def owns(self, key: str) -> bool:
        """This worker writes what ``key`` (an area code, device id or topic) identifies."""
        return self.count == 1 or partition_of(key, self.count) == self.index


def area_filter(settings: IngestSettings) -> Callable[[str], bool] | None:
    """``owns(area_code)`` for a partitioned worker; None when the worker keeps every area."""
    if settings.partitions <= 1:
        return None
    return Partition(settings.partition, settings.partitions).owns

"""Device affinity without broker support: each worker keeps the areas of its partition.

Mosquitto's shared subscriptions hand messages round-robin, so per-sensor state (the stream
core's SensorState, the alert engine's EWMA and ``for`` timers) would be split between workers.
With ``ingest.partitions = N`` every worker receives every message (worker i subscribes in its
own group ``$share/<group>-<i>/...``) and keeps only what belongs to partition i; the rest is
acknowledged unwritten because the owning worker writes it. The partition key is a device's
**area**, so one worker also sees all devices of an area (the per-area rates and aggregate rules
need them together); an unregistered device or a message-level failure falls back to the device
id or the topic, so exactly one worker writes each dead letter. The hash is CRC-32, stable
across processes and machines (Python's ``hash`` of a string is salted per process).
See docs/scaling.md for why this scheme and when to use EMQX's ``hash_topic`` instead.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


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

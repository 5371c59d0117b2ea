"""Device affinity without broker support: each worker keeps the areas of its partition.

Mosquitto's shared subscriptions hand messages round-robin, so per-sensor state (the stream
core's SensorState and anomaly detector, the alert engine's ``for`` timers) would be split
between workers.
With ``ingest.partitions = N`` every worker receives every message (worker i subscribes in its
own group ``$share/<group>-<i>/...``) and keeps only what belongs to partition i; the rest is
acknowledged unwritten because the owning worker writes it. The partition key is a device's
**area**, so one worker also sees all devices of an area (the per-area rates and aggregate rules
need them together); an unregistered device or a message-level failure falls back to the device
id or the topic, so exactly one worker writes each dead letter. The rule itself (CRC-32 of the
area code) lives in ``cityops.partition`` so the stream core and the alert engine of the same
worker keep the same areas.
See docs/scaling.md for why this scheme and when to use EMQX's ``hash_topic`` instead.
"""

from __future__ import annotations

from cityops.partition import Partition, partition_of

__all__ = ["Partition", "partition_of"]

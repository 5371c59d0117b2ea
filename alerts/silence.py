"""Which devices have been silent longer than a no-data rule allows, without a scan of them all.

A no-data rule (``NoDataRule``) breaches for every in-service device of its kind whose last
reading (or, never heard, the engine's start) is more than ``intervals`` reporting intervals
old, at every tick. Scanning every registered device each tick grew with the registry: at a
city's million devices, seconds of the alert engine's five-second tick (the soak,
docs/performance.md). The watch keeps, per rule, a heap of each device's deadline (``last +
intervals x interval``) and a set of the devices found silent. A tick visits only the devices
whose deadline passed and the silent ones: a device heard since its deadline was scheduled is
put back at its new deadline (the heap is lazy: readings do not touch it, so the hot path pays
nothing). Devices are found silent by the same condition and at the same ticks as the scan.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta

from alerts.directory import DeviceDirectory, DeviceInfo
from alerts.rules import NoDataRule
from cityops import catalog


def allowed_silence(rule: NoDataRule, info: DeviceInfo) -> timedelta:
    """How long ``info`` may stay silent under ``rule``."""
    interval = rule.interval or timedelta(seconds=catalog.KINDS[info.kind].typical_interval_s)
    return rule.intervals * interval


class SilenceWatch:
    """The devices one no-data rule finds silent, tick after tick."""

    def __init__(
        self,
        rule: NoDataRule,
        directory: DeviceDirectory,
        last_heard: Mapping[str, datetime],
        started_at: datetime,
    ) -> None:
        self.rule = rule
        self.key = (rule.kind, rule.intervals, rule.interval)
        self._started_at = started_at
        # the scheduled deadline of each device (epoch seconds); heap entries that disagree
        # with it are stale and dropped when they come up
        self._deadline: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        # found silent at the last tick, in the order found (dicts keep it; ticks are stable)
        self._silent: dict[str, None] = {}
        for device_id, info in directory.devices.items():
            if self._watches(info):
                self._schedule(device_id, info, last_heard)
        heapq.heapify(self._heap)

    def _watches(self, info: DeviceInfo) -> bool:
        return info.in_service and self.rule.kind in (None, info.kind)

    def _due(self, device_id: str, info: DeviceInfo, last_heard: Mapping[str, datetime]) -> float:
        last = last_heard.get(device_id, self._started_at)
        return (last + allowed_silence(self.rule, info)).timestamp()

    def _schedule(
        self, device_id: str, info: DeviceInfo, last_heard: Mapping[str, datetime]
    ) -> None:
        due = self._due(device_id, info, last_heard)
        self._deadline[device_id] = due
        self._heap.append((due, device_id))  # heapified by the caller

    def _push(self, device_id: str, due: float) -> None:
        self._deadline[device_id] = due
        heapq.heappush(self._heap, (due, device_id))

    def registry_changed(
        self,
        old: DeviceDirectory,
        new: DeviceDirectory,
        last_heard: Mapping[str, datetime],
    ) -> None:
        """Watch the devices ``new`` adds, or now puts in service or under this rule's kind.

        Devices it removes or takes out of service are dropped when their deadline comes up.
        """
        for device_id, info in new.devices.items():
            before = old.devices.get(device_id)
            if (
                before is None
                or before.in_service != info.in_service
                or before.kind is not info.kind
            ) and self._watches(info):
                self._push(device_id, self._due(device_id, info, last_heard))

    def silent(
        self,
        now: datetime,
        directory: DeviceDirectory,
        last_heard: Mapping[str, datetime],
    ) -> Iterator[tuple[DeviceInfo, timedelta]]:
        """Each watched device silent longer than allowed at ``now``, with how long."""
        limit = now.timestamp()
        heap = self._heap
        while heap and heap[0][0] < limit:
            due, device_id = heapq.heappop(heap)
            if self._deadline.get(device_id) != due:
                continue  # stale: scheduled again since
            del self._deadline[device_id]
            self._silent[device_id] = None
        for device_id in list(self._silent):
            info = directory.get(device_id)
            if info is None or not self._watches(info):
                del self._silent[device_id]  # left the registry, service or the rule's kind
                continue
            last = last_heard.get(device_id, self._started_at)
            silence = now - last
            if silence > allowed_silence(self.rule, info):
                yield info, silence
            else:  # heard since: back to waiting for its next deadline
                del self._silent[device_id]
                self._push(device_id, self._due(device_id, info, last_heard))

    def __len__(self) -> int:
        """Devices waiting for a deadline or found silent."""
        return len(self._deadline) + len(self._silent)

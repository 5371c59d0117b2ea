"""The no-data watch finds exactly the devices a scan of the whole registry finds, tick by tick."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from alerts.directory import DeviceDirectory, DeviceInfo
from alerts.rules import NoDataRule
from alerts.silence import SilenceWatch, allowed_silence
from cityops.catalog import Kind

START = datetime(2026, 12, 1, tzinfo=UTC)
KINDS = (Kind.STREETLIGHT, Kind.HEATING, Kind.CHARGER, Kind.MANHOLE)


def _scan(
    rule: NoDataRule,
    directory: DeviceDirectory,
    last_heard: dict[str, datetime],
    now: datetime,
) -> set[tuple[str, timedelta]]:
    """The engine's former evaluation: every device, every tick."""
    out = set()
    for info in directory.devices.values():
        if not info.in_service or rule.kind not in (None, info.kind):
            continue
        silent = now - last_heard.get(info.device_id, START)
        if silent > allowed_silence(rule, info):
            out.add((info.device_id, silent))
    return out


def _directory(rng: random.Random, n: int, prefix: str = "D") -> DeviceDirectory:
    return DeviceDirectory(
        [
            DeviceInfo(
                device_id=f"{prefix}{i}",
                kind=rng.choice(KINDS),
                area_code="A",
                in_service=rng.random() > 0.1,
                lat=None,
                lon=None,
                attributes={},
            )
            for i in range(n)
        ]
    )


RULES = [
    NoDataRule(name="any_silent", type="nodata"),
    NoDataRule(name="rooms_silent", type="nodata", kind=Kind.HEATING, intervals=2),
    NoDataRule(name="lamps_quiet", type="nodata", kind=Kind.STREETLIGHT, interval="7m"),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_the_watch_finds_what_the_scan_finds(rule: NoDataRule, seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 (a test's reproducible sequence)
    directory = _directory(rng, 300)
    last_heard: dict[str, datetime] = {}
    now = START
    watch: SilenceWatch | None = None
    found_any = 0
    for step in range(400):
        now += timedelta(seconds=rng.choice([5, 5, 5, 60, 600, 1800]))
        # readings: a random part of the fleet reports, some devices never do
        for info in rng.sample(list(directory.devices.values()), rng.randint(0, 40)):
            if not info.device_id.endswith("7"):
                heard = now - timedelta(seconds=rng.randint(0, 30))
                last_heard[info.device_id] = max(last_heard.get(info.device_id, heard), heard)
        if step % 50 == 49:  # a registry reload: devices added, removed, in and out of service
            infos = [
                DeviceInfo(
                    device_id=i.device_id,
                    kind=rng.choice(KINDS) if rng.random() < 0.05 else i.kind,
                    area_code="A",
                    in_service=(not i.in_service) if rng.random() < 0.1 else i.in_service,
                    lat=None,
                    lon=None,
                    attributes={},
                )
                for i in directory.devices.values()
                if rng.random() > 0.05
            ]
            infos += _directory(rng, 20, prefix=f"N{step}-").devices.values()
            new = DeviceDirectory(infos)
            if watch is not None:
                watch.registry_changed(directory, new, last_heard)
            directory = new
        if watch is None:  # created at the first tick, as the engine does
            watch = SilenceWatch(rule, directory, last_heard, START)
        got = list(watch.silent(now, directory, last_heard))
        expect = _scan(rule, directory, last_heard, now)
        assert {(i.device_id, s) for i, s in got} == expect, f"step {step}"
        assert len(got) == len(expect)  # each silent device once
        found_any += len(expect)
    assert found_any > 0


def test_a_tick_visits_only_due_and_silent_devices() -> None:
    rule = NoDataRule(name="rooms_silent", type="nodata", kind=Kind.HEATING)
    infos = [
        DeviceInfo(device_id=f"H{i}", kind=Kind.HEATING, area_code="A", in_service=True,
                   lat=None, lon=None, attributes={})
        for i in range(10_000)
    ]  # fmt: skip
    directory = DeviceDirectory(infos)
    last_heard = {f"H{i}": START for i in range(10_000)}
    watch = SilenceWatch(rule, directory, last_heard, START)
    limit = allowed_silence(rule, infos[0])
    # all heard since: nothing is visited until their deadlines, then each once
    for i in range(10_000):
        last_heard[f"H{i}"] = START + timedelta(minutes=30)
    assert list(watch.silent(START + limit, directory, last_heard)) == []
    assert len(watch._heap) == 10_000  # nothing came due: nothing was touched
    assert list(watch.silent(START + limit + timedelta(seconds=1), directory, last_heard)) == []
    assert len(watch._heap) == 10_000  # all came due, none silent, all scheduled again
    late = START + timedelta(minutes=30) + limit + timedelta(seconds=1)
    assert len(list(watch.silent(late, directory, last_heard))) == 10_000

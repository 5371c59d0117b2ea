"""Driving a simulation into a sink (MQTT or a JSON Lines file) at a chosen speed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

import orjson

from cityops.catalog import Kind
from simulators.clock import SimClock
from simulators.engine import Simulation, TickOutput
from simulators.messages import Message, encode
from simulators.publisher import Publisher


class Sink(Protocol):
    """Where messages go."""

    def send(self, message: Message) -> None:
        """Deliver one message."""

    def idle_until(self, deadline: float) -> None:
        """Wait until the monotonic clock reaches ``deadline``, doing background work."""


class MqttSink:
    """Sends messages through a connected Publisher."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def send(self, message: Message) -> None:
        """Publish at QoS 1."""
        self.publisher.publish(message)

    def idle_until(self, deadline: float) -> None:
        """Service the connections while waiting."""
        self.publisher.service_until(deadline)


class FileSink:
    """Writes messages as JSON Lines ``{"topic": ..., "payload": {...}}`` (a dry run)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def send(self, message: Message) -> None:
        """Append one line."""
        self.out.write(
            b'{"topic":' + orjson.dumps(message.topic) + b',"payload":' + message.payload + b"}\n"
        )

    def idle_until(self, deadline: float) -> None:
        """Sleep."""
        time.sleep(max(0.0, deadline - time.monotonic()))


@dataclass(kw_only=True)
class Progress:
    """What a progress display shows after each tick."""

    tick: int
    ticks: int
    sim_ms: int
    messages: int
    readings: int
    complaints: int
    behind_s: float


def run(
    sim: Simulation,
    sink: Sink,
    *,
    speed: float,
    prefix: str,
    on_tick: Callable[[Progress, TickOutput], None] | None = None,
    release: Callable[[int], None] | None = None,
) -> Progress:
    """Run ``sim`` to its end, releasing each tick when simulated time is due at ``speed``.

    ``release`` (a simulated process clock's, see cityops.clock) is told after each tick's
    messages are sent that everything before the next tick's instant is out.
    """
    clock = SimClock(start_ms=sim.start_ms, speed=speed)
    progress = Progress(
        tick=0, ticks=sim.n_ticks, sim_ms=sim.start_ms, messages=0, readings=0, complaints=0,
        behind_s=0.0,
    )  # fmt: skip
    for out in sim.ticks():
        if speed > 0:
            due = clock.due(out.t_ms)
            sink.idle_until(due)
            progress.behind_s = max(0.0, time.monotonic() - due)
        for message in encode(out, prefix):
            sink.send(message)
            progress.messages += 1
        if release is not None:
            release(out.t_ms + sim.tick_ms)
        progress.tick = out.tick + 1
        progress.sim_ms = out.t_ms
        progress.readings += len(out.readings)
        progress.complaints += len(out.complaints)
        if on_tick is not None:
            on_tick(progress, out)
    return progress


def device_list(sim: Simulation) -> tuple[list[tuple[Kind, str]], list[str]]:
    """Devices that publish directly and the gateways, for per-device connections."""
    direct: list[tuple[Kind, str]] = []
    gateways: set[str] = set()
    for kind, table in sim.scenario.tables.items():
        for device_id, gateway in zip(
            table.device_id.tolist(), table.gateway.tolist(), strict=True
        ):
            if gateway is None:
                direct.append((kind, str(device_id)))
            else:
                gateways.add(str(gateway))
    return direct, sorted(gateways)

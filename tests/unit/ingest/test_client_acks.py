"""Batched acknowledgements: the same PUBACK packets as paho's ``ack``, in order, stale skipped."""

from __future__ import annotations

from typing import Any

from cityops.settings import Settings
from ingest.batcher import Delivery
from ingest.client import MqttSource


def _source() -> MqttSource:
    source = MqttSource(Settings(), lambda d: None, client_id="test-acks")
    source._generation = 2
    source._connected.set()
    return source


def _queued(source: MqttSource) -> list[dict[str, Any]]:
    return list(source._client._out_packet)


def _delivery(mid: int, *, qos: int = 1, generation: int = 2) -> Delivery:
    return Delivery("cityops/v1/heating/HT-1/telemetry", b"{}", mid, qos, generation, 0)


def test_ack_all_queues_what_paho_ack_queues_in_order() -> None:
    batched = _source()
    one_by_one = _source()
    deliveries = [_delivery(mid) for mid in (7, 3, 65535, 1, 300)]
    assert batched.ack_all(deliveries) == 0
    for d in deliveries:
        assert one_by_one.ack(d)
    assert _queued(batched) == _queued(one_by_one)
    assert [p["mid"] for p in _queued(batched)] == [7, 3, 65535, 1, 300]


def test_ack_all_skips_stale_generations_and_qos0() -> None:
    source = _source()
    deliveries = [
        _delivery(1),
        _delivery(2, generation=1),  # an older connection: the broker redelivers it
        _delivery(3, qos=0),  # nothing to acknowledge
        _delivery(4),
    ]
    assert source.ack_all(deliveries) == 1
    assert [p["mid"] for p in _queued(source)] == [1, 4]


def test_ack_all_sends_nothing_while_disconnected() -> None:
    source = _source()
    source._connected.clear()
    assert source.ack_all([_delivery(1), _delivery(2)]) == 2
    assert _queued(source) == []

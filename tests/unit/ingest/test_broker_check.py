"""The start-up broker check's verdicts, from what a broker can tell (no broker needed)."""

from __future__ import annotations

from cityops.settings import IngestSettings, Settings
from ingest.broker_check import BrokerFacts, assess


def _settings(**ingest: object) -> Settings:
    return Settings(ingest=IngestSettings(**ingest))  # type: ignore[arg-type]


def _events(facts: BrokerFacts, **ingest: object) -> list[str]:
    return [f.event for f in assess(facts, _settings(**ingest))]


def test_mosquitto_on_its_defaults_is_flagged_with_the_default_limit() -> None:
    facts = BrokerFacts(connected=True, receive_maximum=20, version="mosquitto version 2.0.18")
    (finding,) = assess(facts, _settings(burst_messages=1_000_000))
    assert finding.event == "broker_queue_too_small"
    assert finding.level == "warning"
    assert finding.queue_limit == 1000
    assert "1,000,000" in finding.message
    assert "deploy/mosquitto/mosquitto.conf" in finding.message
    # $SYS unreadable (version unknown): the CONNACK alone is enough
    assert _events(BrokerFacts(connected=True, receive_maximum=20)) == ["broker_queue_too_small"]
    # a burst that fits the default queue is no problem
    assert _events(facts, burst_messages=500) == []


def test_the_project_config_is_not_mistaken_for_defaults() -> None:
    facts = BrokerFacts(connected=True, receive_maximum=1000, maximum_packet_size=2_097_152)
    assert _events(facts) == ["broker_queue_limit_unknown"]
    assert _events(facts, broker_max_queued_messages=2_000_000) == []
    assert _events(facts, broker_max_queued_messages=100_000) == ["broker_queue_too_small"]


def test_other_brokers_and_dropped_publishes() -> None:
    emqx = BrokerFacts(connected=True, receive_maximum=20, version="emqx 5.8.0")
    assert _events(emqx) == ["broker_queue_limit_unknown"]
    dropped = BrokerFacts(
        connected=True, receive_maximum=1000, maximum_packet_size=1, version="mosquitto", dropped=7
    )
    assert _events(dropped, broker_max_queued_messages=2_000_000) == ["broker_dropped_messages"]


def test_an_unreachable_broker_is_reported_not_raised() -> None:
    (finding,) = assess(BrokerFacts(error="cannot connect"), _settings())
    assert finding.event == "broker_check_failed"

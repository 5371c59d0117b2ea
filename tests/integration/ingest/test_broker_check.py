"""The start-up broker check against real mosquittos: on its defaults, and on the project config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cityops.settings import IngestSettings, MqttSettings, Settings
from ingest.broker_check import assess, check_broker, probe
from tests.conftest import start_mosquitto
from tests.integration.ingest.conftest import INGEST_PASSWORD, SecureBroker

pytestmark = [pytest.mark.mqtt]

# What an operator gets from a distribution's mosquitto with a listener added and nothing else:
# the pilot's first broker, which dropped about 20 % of a run at the default queue limit.
DEFAULT_BROKER_CONF = """\
user root
listener {port} 127.0.0.1
allow_anonymous true
"""


@pytest.fixture
def default_broker(tmp_path: Path) -> Iterator[int]:
    """A mosquitto on its defaults (anonymous, so $SYS is readable)."""
    proc, port = start_mosquitto(DEFAULT_BROKER_CONF, tmp_path / "default-broker")
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_mosquitto_defaults_are_recognised_and_warned_about(default_broker: int) -> None:
    settings = Settings(mqtt=MqttSettings(port=default_broker))
    facts = probe(settings, timeout_s=5)
    assert facts.connected
    assert facts.version is not None
    assert facts.version.startswith("mosquitto")
    assert facts.dropped == 0
    findings = check_broker(settings)
    assert [f.event for f in findings] == ["broker_queue_too_small"]
    assert findings[0].queue_limit == 1000


def test_project_config_passes_when_its_limit_is_declared(secure_broker: SecureBroker) -> None:
    mqtt = MqttSettings(
        host=secure_broker.host,
        port=secure_broker.port,
        username="cityops-ingest",
        password=INGEST_PASSWORD,  # type: ignore[arg-type]
    )
    facts = probe(Settings(mqtt=mqtt), timeout_s=3)
    assert facts.connected
    # the ingest account may not read $SYS under the product's ACL; the CONNACK still tells
    assert facts.version is None
    assert facts.maximum_packet_size == 2_097_152
    declared = Settings(mqtt=mqtt, ingest=IngestSettings(broker_max_queued_messages=2_000_000))
    assert assess(facts, declared) == []
    unknown = assess(facts, Settings(mqtt=mqtt))
    assert [f.event for f in unknown] == ["broker_queue_limit_unknown"]


def test_an_unreachable_broker_is_a_warning_not_a_crash() -> None:
    from tests.conftest import free_port

    findings = check_broker(
        Settings(mqtt=MqttSettings(port=free_port()), ingest=IngestSettings(broker_check_s=1))
    )
    assert [f.event for f in findings] == ["broker_check_failed"]


def test_refused_credentials_are_reported(secure_broker: SecureBroker) -> None:
    mqtt = MqttSettings(
        host=secure_broker.host,
        port=secure_broker.port,
        username="cityops-ingest",
        password="wrong",  # type: ignore[arg-type]
    )
    findings = check_broker(Settings(mqtt=mqtt))
    assert [f.event for f in findings] == ["broker_check_failed"]
    assert "refused" in findings[0].message

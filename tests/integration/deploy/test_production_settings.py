"""CITYOPS_ENVIRONMENT=production refuses placeholder secrets, naming the settings (no services)."""

from __future__ import annotations

import os

import pytest

from cityops.errors import ConfigError
from cityops.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CITYOPS_"):
            monkeypatch.delenv(key)


def test_production_names_every_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_ENVIRONMENT", "production")
    monkeypatch.setenv("CITYOPS_DB_DSN", "postgresql://cityops:CHANGE_ME@db:5432/cityops")
    monkeypatch.setenv("CITYOPS_MQTT_PASSWORD", "CHANGE_ME")
    monkeypatch.setenv("CITYOPS_MQTT_DEVICE_SECRET", "prefix-CHANGE_ME")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    for name in (
        "db.dsn (CITYOPS_DB_DSN)",
        "mqtt.password (CITYOPS_MQTT_PASSWORD)",
        "mqtt.device_secret (CITYOPS_MQTT_DEVICE_SECRET)",
    ):
        assert name in message
    assert "CHANGE_ME" in message
    assert "Value error" not in message  # the message reads as the operator's, not pydantic's


def test_production_with_real_secrets_and_development_with_placeholders_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CITYOPS_ENVIRONMENT", "production")
    monkeypatch.setenv("CITYOPS_DB_DSN", "postgresql://cityops:9f2c1d@db:5432/cityops")
    monkeypatch.setenv("CITYOPS_MQTT_PASSWORD", "a-real-one")
    assert load_settings().environment == "production"
    monkeypatch.setenv("CITYOPS_ENVIRONMENT", "development")
    monkeypatch.setenv("CITYOPS_MQTT_PASSWORD", "CHANGE_ME")
    assert load_settings().mqtt.password is not None  # a laptop may keep the example values


def test_unknown_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_ENVIRONMENT", "prod")
    with pytest.raises(ConfigError, match=r"environment \(CITYOPS_ENVIRONMENT\)"):
        load_settings()

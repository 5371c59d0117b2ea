"""Settings: defaults, environment, config file, and start-up errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityops.errors import ConfigError
from cityops.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CITYOPS_"):
            monkeypatch.delenv(key)


def test_defaults_are_local() -> None:
    s = load_settings()
    assert s.db.dsn == "postgresql://postgres@127.0.0.1:5432/cityops"
    assert (s.mqtt.host, s.mqtt.port) == ("127.0.0.1", 1883)
    assert s.log.format == "console"
    assert s.storage.timescaledb == "auto"


def test_environment_sets_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_DB_DSN", "postgresql://u@db:5432/x")
    monkeypatch.setenv("CITYOPS_MQTT_CLIENT_ID", "worker-1")
    monkeypatch.setenv("CITYOPS_MQTT_PASSWORD", "s3cret")
    monkeypatch.setenv("CITYOPS_STORAGE_PARTITION_DAYS", "7")
    monkeypatch.setenv("CITYOPS_LOG_FORMAT", "json")
    s = load_settings()
    assert s.db.dsn == "postgresql://u@db:5432/x"
    assert s.mqtt.client_id == "worker-1"
    assert s.mqtt.password is not None
    assert s.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    assert s.storage.partition_days == 7
    assert s.log.format == "json"


def test_config_file_and_environment_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "cityops.toml"
    cfg.write_text('[mqtt]\nport = 1884\nhost = "broker"\n[storage]\nretention_days = 30\n')
    monkeypatch.setenv("CITYOPS_MQTT_HOST", "from-env")
    s = load_settings(cfg)
    assert s.mqtt.port == 1884
    assert s.mqtt.host == "from-env"
    assert s.storage.retention_days == 30
    monkeypatch.setenv("CITYOPS_CONFIG", str(cfg))
    assert load_settings().mqtt.port == 1884


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("CITYOPS_MQTT_PORT", "70000", "mqtt.port (CITYOPS_MQTT_PORT)"),
        ("CITYOPS_DB_POOL_MAX", "zero", "db.pool_max (CITYOPS_DB_POOL_MAX)"),
        ("CITYOPS_LOG_FORMAT", "xml", "log.format (CITYOPS_LOG_FORMAT)"),
        ("CITYOPS_STORAGE_TIMESCALEDB", "maybe", "storage.timescaledb"),
        ("CITYOPS_TIMEZONE", "Mars/Olympus", "timezone (CITYOPS_TIMEZONE)"),
        ("CITYOPS_DB_DSN", "host=a port=1 =oops", "db.dsn (CITYOPS_DB_DSN)"),
    ],
)
def test_bad_value_names_the_field(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert named in str(info.value)


def test_unknown_key_in_config_file_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[mqtt]\nprot = 1884\n")
    with pytest.raises(ConfigError, match=r"mqtt\.prot"):
        load_settings(cfg)


def test_bad_config_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[db\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)

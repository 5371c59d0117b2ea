"""The one device id rule (cityops.device_ids): MQTT-topic-safe, broker-login-safe, bounded."""

from __future__ import annotations

import pytest

from cityops.device_ids import check_device_id, device_id_problem, is_valid_device_id


@pytest.mark.parametrize("good", ["SL-1", "SL-000123", "gw_7", "a", "HT.2", "X" * 64])
def test_good_ids(good: str) -> None:
    assert device_id_problem(good) is None
    assert check_device_id(good) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("SL 1", "' '"),
        ("SL/1", "'/'"),
        ("SL+", "'+'"),
        ("SL#", "'#'"),
        ("a:b", "':'"),
        ("路灯-1", "only letters"),
        ("tab\t", "'\\t'"),
        ("", "non-empty"),
        ("X" * 65, "at most 64"),
        ("-SL", "start with"),
        ("cityops-ingest", "reserved"),
        ("CityOps-x", "reserved"),
    ],
)
def test_bad_ids_name_the_problem(bad: str, why: str) -> None:
    assert not is_valid_device_id(bad)
    with pytest.raises(ValueError, match="gateway_id") as err:
        check_device_id(bad, "gateway_id")
    assert why in str(err.value)

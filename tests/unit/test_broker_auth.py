"""Derived device passwords are stable, distinct per device and per secret."""

from __future__ import annotations

import pytest

from cityops.broker_auth import device_password


def test_passwords_are_deterministic_and_distinct() -> None:
    a = device_password("s3cret", "SL-000001")
    assert a == device_password("s3cret", "SL-000001")
    assert len(a) == 32
    assert a != device_password("s3cret", "SL-000002")
    assert a != device_password("other", "SL-000001")


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        device_password("", "SL-1")

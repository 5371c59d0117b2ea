"""Broker password hashes, ACL text and config rendering."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from ingest.broker import (
    acl_text,
    check_username,
    default_config_path,
    password_hash,
    render_config,
    write_credentials,
)


def test_hash_is_mosquittos_pbkdf2_format() -> None:
    salt = b"0123456789ab"
    h = password_hash("pw", salt=salt)
    _, seven, iterations, salt_b64, digest_b64 = h.split("$")
    assert (seven, iterations) == ("7", "101")
    assert base64.b64decode(salt_b64) == salt
    expected = hashlib.pbkdf2_hmac("sha512", b"pw", salt, 101)
    assert base64.b64decode(digest_b64) == expected
    assert password_hash("pw") != password_hash("pw")  # random salt


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd absent")
def test_mosquitto_passwd_hash_has_the_same_shape(tmp_path: Path) -> None:
    f = tmp_path / "p"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(f), "u", "pw"], check=True)
    _, theirs = f.read_text().strip().split(":", 1)
    _, _seven, iterations, salt_b64, digest_b64 = theirs.split("$")
    ours = hashlib.pbkdf2_hmac("sha512", b"pw", base64.b64decode(salt_b64), int(iterations))
    assert base64.b64encode(ours).decode() == digest_b64


def test_usernames_and_acl() -> None:
    assert check_username("SL-0001") == "SL-0001"
    for bad in ("a b", "a:b", "a/b", "a#", ""):
        with pytest.raises(ValueError, match="broker user name"):
            check_username(bad)
    text = acl_text()
    assert "pattern write cityops/v1/+/%u/telemetry" in text
    assert "pattern read" not in text
    assert "user cityops-ingest" in text


def test_device_id_colliding_with_a_service_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="collides"):
        write_credentials(tmp_path, ["cityops-ingest"], secret="s", service_passwords={})


def test_render_config_changes_only_listener_and_paths(tmp_path: Path) -> None:
    original = default_config_path().read_text()
    text = render_config(
        original,
        port=1234,
        data_dir=tmp_path,
        password_file=tmp_path / "p",
        acl_file=tmp_path / "a",
    )
    assert "listener 1234 127.0.0.1" in text
    assert f"password_file {tmp_path / 'p'}" in text
    assert "allow_anonymous false" in text
    assert "persistence true" in text
    changed = [
        (a, b) for a, b in zip(original.splitlines(), text.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 4
    with pytest.raises(ValueError, match="lacks"):
        render_config(
            "listener 1\n", port=1, data_dir="d", password_file=tmp_path, acl_file=tmp_path
        )


def test_shipped_acl_file_is_current() -> None:
    """deploy/mosquitto/acl is what `cityops broker credentials` writes (regenerate if not)."""
    shipped = default_config_path().parent / "acl"
    assert shipped.read_text(encoding="utf-8") == acl_text()

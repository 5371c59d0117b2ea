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
    for bad in ("a b", "a:b", "a/b", "a#", "a+", "", "x" * 65, "cityops-x"):
        with pytest.raises(ValueError, match="broker user name"):
            check_username(bad)
    text = acl_text()
    assert "pattern write cityops/v1/+/%u/telemetry" in text
    assert "pattern read" not in text
    assert "user cityops-ingest" in text


def test_bad_ids_are_refused_and_the_rest_credentialed(tmp_path: Path) -> None:
    """One bad registry id no longer blocks the credentials of the whole fleet."""
    report = write_credentials(
        tmp_path,
        ["SL-1", "cityops-ingest", "bad id", "a/b", "HT-1", "x+y", "GW#1"],
        secret="s",
        service_passwords={},
    )
    assert report.users == 2
    refused = dict(report.refused)
    assert set(refused) == {"cityops-ingest", "bad id", "a/b", "x+y", "GW#1"}
    assert "collides" in refused["cityops-ingest"]
    assert "' '" in refused["bad id"]
    devices = [line.split(":", 1)[0] for line in (tmp_path / "passwd").read_text().splitlines()]
    assert devices == ["cityops-hotline", "SL-1", "HT-1"]
    services = [
        line.split(":", 1)[0] for line in (tmp_path / "passwd-services").read_text().splitlines()
    ]
    assert set(services) == {
        "cityops-ingest",
        "cityops-hotline",
        "cityops-publisher",
        "cityops-api",
        "cityops-monitor",
    }
    assert oct((tmp_path / "passwd-services").stat().st_mode & 0o777) == "0o600"


def test_render_config_changes_only_listener_and_paths(tmp_path: Path) -> None:
    original = default_config_path().read_text()
    text = render_config(
        original,
        port=1234,
        service_port=1235,
        data_dir=tmp_path,
        password_file=tmp_path / "p",
        acl_file=tmp_path / "a",
    )
    assert "listener 1234 127.0.0.1" in text
    assert "listener 1235 127.0.0.1" in text
    assert f"password_file {tmp_path / 'p'}" in text
    assert f"password_file {tmp_path / 'passwd-services'}" in text
    assert "use_username_as_clientid true" in text
    assert "per_listener_settings true" in text
    assert "allow_anonymous false" in text
    assert "persistence true" in text
    changed = [
        (a, b) for a, b in zip(original.splitlines(), text.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 7  # two listeners, two password files, two ACL lines, the data
    with pytest.raises(ValueError, match="lacks"):
        render_config(
            "listener 1\n", port=1, data_dir="d", password_file=tmp_path, acl_file=tmp_path
        )


def test_shipped_acl_file_is_current() -> None:
    """deploy/mosquitto/acl is what `cityops broker credentials` writes (regenerate if not)."""
    shipped = default_config_path().parent / "acl"
    assert shipped.read_text(encoding="utf-8") == acl_text()

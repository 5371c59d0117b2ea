"""Per-device broker credentials: every device and gateway logs in as itself.

The broker user name is the device id (or gateway id); the password is derived from a deployment
secret (``mqtt.device_secret``) with HMAC-SHA256, so the credentials file for the broker and the
simulators' logins can be generated from the registry without storing one password per device.
Rotating the secret rotates every device password at once; a single device can be re-keyed by
giving it an explicit password in the broker's password file instead.
"""

from __future__ import annotations

import hashlib
import hmac


def device_password(secret: str, username: str) -> str:
    """The broker password of ``username`` (device or gateway id) under ``secret``."""
    if not secret:
        raise ValueError("the device secret must not be empty")
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha256)
    return digest.hexdigest()[:32]

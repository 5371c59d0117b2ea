"""The one rule for device and gateway ids.

A device id is also an MQTT topic level (``cityops/v1/<kind>/<id>/telemetry``), the device's
broker user name (a line ``<id>:<hash>`` of mosquitto's password file, ``%u`` in ACL patterns)
and, on the device listener, its MQTT client id. So it must not contain a topic separator or
wildcard (``/``, ``+``, ``#``), the password file's ``:``, white space or control characters, and
it is length-limited. The rule is deliberately plain ASCII: letters, digits, ``-``, ``_`` and
``.``, starting with a letter or digit, at most 64 characters. Ids starting with ``cityops-``
are reserved for the cityops service accounts and their client ids.

The registry import, the API and ``cityops broker credentials`` all check ids with
:func:`check_device_id`, so one bad id is refused where it enters, with its line, instead of
blocking the credentials of the whole fleet later.
"""

from __future__ import annotations

import re

DEVICE_ID_MAX_LENGTH = 64
RESERVED_PREFIX = "cityops-"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)


def device_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a device or gateway id, or None if it can."""
    if not isinstance(value, str) or value == "":
        return "must be a non-empty text"
    if len(value) > DEVICE_ID_MAX_LENGTH:
        return f"is {len(value)} characters long; at most {DEVICE_ID_MAX_LENGTH} are allowed"
    if not _DEVICE_ID_RE.match(value):
        bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "._-"))})
        if bad:
            shown = ", ".join(repr(c) for c in bad)
            return (
                f"contains {shown}; only letters, digits, '-', '_' and '.' are allowed "
                "(it is an MQTT topic level and the device's broker user name)"
            )
        return "must start with a letter or a digit"
    if value.lower().startswith(RESERVED_PREFIX):
        return f"starts with {RESERVED_PREFIX!r}, which is reserved for cityops services"
    return None


def is_valid_device_id(value: str) -> bool:
    """True if ``value`` follows the device id rule."""
    return device_id_problem(value) is None


def check_device_id(value: str, field: str = "device_id") -> str:
    """``value`` if it is a valid device/gateway id, else ValueError naming ``field``."""
    problem = device_id_problem(value)
    if problem is not None:
        raise ValueError(f"{field}: {value!r} {problem}")
    return value

"""API keys: creation, lookup, revocation and listing, shared by `cityops keys` and the API.

A key is ``cok_`` followed by 43 URL-safe characters of a 32-byte random secret. Only its
SHA-256 is stored: with 256 bits of entropy nothing can be brute-forced, so a slow password hash
(argon2) would cost every request tens of milliseconds and buy nothing. The plaintext is returned
once by :func:`create_key` and never again.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.rows import class_row

from cityops.errors import CityopsError

KEY_PREFIX = "cok_"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,99}$")
# last_used_at is refreshed at most this often, so reads do not become one write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyError(CityopsError):
    """An API key operation failed (bad name or role, unknown key, duplicate name)."""


class Role(StrEnum):
    """What a key may do; ordered viewer < duty < admin."""

    VIEWER = "viewer"
    DUTY = "duty"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in the order viewer < duty < admin."""
        return _RANK[self]

    # str already defines the comparisons (alphabetically "admin" < "duty"), so all four are
    # overridden; a plain string is compared as the role it names.
    def __lt__(self, other: object) -> bool:
        """Lower privilege than ``other``."""
        return self.rank < _as_role(other).rank

    def __le__(self, other: object) -> bool:
        """Lower or equal privilege."""
        return self.rank <= _as_role(other).rank

    def __gt__(self, other: object) -> bool:
        """Higher privilege than ``other``."""
        return self.rank > _as_role(other).rank

    def __ge__(self, other: object) -> bool:
        """Higher or equal privilege."""
        return self.rank >= _as_role(other).rank

    __hash__ = StrEnum.__hash__


_RANK = {Role.VIEWER: 0, Role.DUTY: 1, Role.ADMIN: 2}


def _as_role(other: object) -> Role:
    if isinstance(other, Role):
        return other
    if isinstance(other, str) and other in _RANK:
        return Role(other)
    raise TypeError(f"cannot compare a role with {other!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Principal:
    """Who is calling: the key's id, name and role."""

    key_id: int
    name: str
    role: Role


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyRow:
    """A stored key as listed (never the secret)."""

    id: int
    name: str
    role: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def hash_key(plaintext: str) -> str:
    """Hex SHA-256 of a key, the form stored in ``api_keys.key_hash``."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def parse_role(role: str | Role) -> Role:
    """The role named ``role``; ApiKeyError listing the roles otherwise."""
    try:
        return Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise ApiKeyError(f"role: {role!r} is not one of {allowed}") from None


def create_key(conn: psycopg.Connection[Any], name: str, role: str | Role) -> tuple[int, str]:
    """Store a new key; return ``(key_id, plaintext)``. The plaintext is not stored anywhere."""
    if not _NAME_RE.match(name):
        raise ApiKeyError(
            f"name: {name!r} must be 1-100 characters of letters, digits and _.@:- "
            "starting with a letter or digit"
        )
    checked = parse_role(role)
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO api_keys (name, role, key_hash, prefix) VALUES (%s, %s, %s, %s) "
                "RETURNING id",
                (name, checked.value, hash_key(plaintext), plaintext[:12]),
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise ApiKeyError(
            f"name: a key called {name!r} already exists (revoke it or pick another name)"
        ) from None
    if row is None:
        raise ApiKeyError("the key was not stored")
    return int(row[0]), plaintext


def revoke_key(conn: psycopg.Connection[Any], key_id_or_name: int | str) -> int:
    """Revoke a key by id or name; return its id. Revoking twice is an error."""
    with conn.transaction():
        if isinstance(key_id_or_name, int) or str(key_id_or_name).isdigit():
            row = conn.execute(
                "SELECT id, revoked_at FROM api_keys WHERE id = %s", (int(key_id_or_name),)
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT id, revoked_at FROM api_keys WHERE name = %s", (key_id_or_name,)
            ).fetchone()
        if row is None:
            raise ApiKeyError(f"there is no key {key_id_or_name!r}")
        if row[1] is not None:
            raise ApiKeyError(f"key {key_id_or_name!r} was already revoked at {row[1]:%Y-%m-%d}")
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (row[0],))
    return int(row[0])


def list_keys(conn: psycopg.Connection[Any], *, include_revoked: bool = True) -> list[KeyRow]:
    """Every key (newest first), without secrets."""
    with conn.cursor(row_factory=class_row(KeyRow)) as cur:
        return cur.execute(
            "SELECT id, name, role, prefix, created_at, revoked_at, last_used_at FROM api_keys "
            "WHERE %s OR revoked_at IS NULL ORDER BY id DESC",
            (include_revoked,),
        ).fetchall()


def authenticate(conn: psycopg.Connection[Any], plaintext: str) -> Principal | None:
    """The principal of a valid, unrevoked key, or None; records when the key was last used."""
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 200:
        return None
    row = conn.execute(
        "SELECT id, name, role, last_used_at, now() FROM api_keys "
        "WHERE key_hash = %s AND revoked_at IS NULL",
        (hash_key(plaintext),),
    ).fetchone()
    if row is None:
        return None
    key_id, name, role, last_used, now = row
    if last_used is None or now - last_used >= LAST_USED_RESOLUTION:
        conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", (key_id,))
    return Principal(key_id=int(key_id), name=str(name), role=Role(role))

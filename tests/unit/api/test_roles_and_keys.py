"""Roles order viewer < duty < admin; keys hash to SHA-256 and are rejected early when malformed."""

from __future__ import annotations

import hashlib

import pytest

from api.deps import Role as ReexportedRole
from api.deps import require_role
from cityops.apikeys import ApiKeyError, Role, hash_key, parse_role


def test_roles_are_ordered_by_privilege_not_alphabet() -> None:
    assert Role.VIEWER < Role.DUTY < Role.ADMIN
    assert Role.ADMIN > Role.VIEWER
    assert Role.DUTY >= Role.DUTY
    assert Role.DUTY <= Role.DUTY
    assert not Role.ADMIN < Role.DUTY  # alphabetically "admin" < "duty"
    assert sorted([Role.ADMIN, Role.VIEWER, Role.DUTY]) == [Role.VIEWER, Role.DUTY, Role.ADMIN]
    assert max(Role) is Role.ADMIN
    assert ReexportedRole is Role
    assert {Role.DUTY: 1}[Role("duty")] == 1


def test_roles_compare_with_role_names_by_privilege() -> None:
    assert Role.VIEWER < "duty"
    assert Role.DUTY < "admin"
    with pytest.raises(TypeError, match="cannot compare"):
        assert Role.VIEWER < "zzz"


def test_parse_role() -> None:
    assert parse_role("duty") is Role.DUTY
    with pytest.raises(ApiKeyError, match="viewer, duty, admin"):
        parse_role("root")


def test_hash_is_sha256_hex() -> None:
    assert hash_key("cok_abc") == hashlib.sha256(b"cok_abc").hexdigest()
    assert hash_key("cok_abc") != hash_key("cok_abd")


def test_one_dependency_per_role() -> None:
    # FastAPI caches a dependency per callable: the same role must give the same callable.
    assert require_role(Role.DUTY) is require_role(Role.DUTY)
    assert require_role(Role.DUTY) is not require_role(Role.ADMIN)

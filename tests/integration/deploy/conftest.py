"""Fixtures for the deployment tests: paths of deploy/, the parsed compose file, .env values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

# The broker and database fixtures of the ingest tests (deploy/mosquitto config, test devices).
from tests.integration.ingest.conftest import ingest_db, secure_broker

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"

__all__ = ["DEPLOY", "ROOT", "compose", "env_example", "ingest_db", "secure_broker"]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """deploy/compose.yaml, parsed."""
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    """deploy/.env.example as a mapping."""
    return read_env_file(DEPLOY / ".env.example")


def filled_env(example: dict[str, str]) -> dict[str, str]:
    """The example env with every placeholder replaced by a distinct URL-safe secret."""
    return {
        k: (v.replace("CHANGE_ME", f"s3cret-{k.lower().replace('_', '-')}"))
        for k, v in example.items()
    }


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$ -> $."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", "-") and not value:
            return arg or ""
        if op in (":?", "?") and not value:
            raise KeyError(f"{name}: {arg}")
        if value is None:
            raise KeyError(f"{name} is not defined in deploy/.env.example")
        return value

    return _VAR.sub(sub, text)


def variables(text: str) -> set[str]:
    """Names of the ${VAR} references in ``text``."""
    return {m.group(1) for m in _VAR.finditer(text) if m.group(1)}

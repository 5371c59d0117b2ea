"""Shared fixtures: real services located by environment, each test with its own database."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cityops.ports import free_port
from cityops.settings import DatabaseSettings, Settings, StorageSettings

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# What was missing in this run, for the one-line summary at the end (see pytest_terminal_summary).
MISSING: dict[str, str] = {}


def _missing(service: str, why: str) -> None:
    """Locally a missing service skips; under CI=true it fails, so a skip never looks green."""
    message = f"{service} not reachable: {why}"
    MISSING.setdefault(service, (why.strip().splitlines() or [""])[0])
    if IN_CI:
        pytest.fail(message + " (CI=true: integration services are required)")
    pytest.skip(message)


def require_tool(name: str, package: str) -> str:
    """Path of a command-line tool a test needs (Debian ``package`` provides it).

    Locally a missing tool skips the test with one line naming the package; under CI=true it
    fails, because .ci/run installs every tool the tests use.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package {package}; `bash .ci/run` installs it)"
        MISSING.setdefault(name, f"Debian package {package}")
        if IN_CI:
            pytest.fail(message + " (CI=true: the tool is required)")
        pytest.skip(message)
    return path


def require_cjk_font() -> None:
    """The report's CJK font (Debian fonts-noto-cjk): skips locally without it, fails in CI."""
    from reports import fonts

    if fonts.find_cjk_font() is None:
        message = f"no CJK font for the report ({fonts.INSTALL_HINT})"
        MISSING.setdefault("CJK font", "Debian package fonts-noto-cjk")
        if IN_CI:
            pytest.fail(message + " (CI=true: .ci/run installs fonts-noto-cjk)")
        pytest.skip(message)


def _missing_from(reports: list[Any]) -> dict[str, str]:
    """What the skip messages above name as missing, read back from the skip reports: with
    workers (pytest -n 2) the skips happen in the workers and only their reports reach here."""
    found: dict[str, str] = {}
    for report in reports:
        longrepr = getattr(report, "longrepr", None)
        message = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        if m := re.search(r"(\S+) not installed \(Debian package ([^;)]+)", message):
            found.setdefault(m.group(1), f"Debian package {m.group(2)}")
        elif m := re.search(r"(\S+) not reachable: ([^\n]*)", message):
            found.setdefault(m.group(1), m.group(2).strip())
        elif "no CJK font for the report" in message:
            found.setdefault("CJK font", "Debian package fonts-noto-cjk")
    return found


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line at the end naming what was missing, so a skip never looks like a broken checkout."""
    missing = {**_missing_from(terminalreporter.stats.get("skipped", [])), **MISSING}
    if missing and not IN_CI:
        parts = ", ".join(f"{name} ({why})" for name, why in sorted(missing.items()))
        terminalreporter.write_line(
            f"not installed or not reachable here, so the tests needing them were skipped: {parts}."
            " `bash .ci/run` installs and starts everything (as root, Debian).",
            yellow=True,
        )


def _admin_dsn(env: str, default: str | None) -> str | None:
    return os.environ.get(env, default)


def _check_server(dsn: str) -> str | None:
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            return None
    except psycopg.OperationalError as err:
        return str(err).strip()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """DSN of a maintenance database on the test server (CITYOPS_TEST_DSN)."""
    dsn = _admin_dsn("CITYOPS_TEST_DSN", DEFAULT_TEST_DSN)
    assert dsn is not None
    problem = _check_server(dsn)
    if problem:
        _missing("PostgreSQL", problem)
    return dsn


def _with_dbname(dsn: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(dsn)
    parts["dbname"] = name
    return make_conninfo(**{k: v for k, v in parts.items() if v is not None})


def _create_db(admin_dsn: str) -> Iterator[str]:
    name = f"cityops_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def empty_db(pg_admin_dsn: str) -> Iterator[str]:
    """DSN of a new, empty database that is dropped after the test."""
    yield from _create_db(pg_admin_dsn)


def make_settings(dsn: str, **storage: object) -> Settings:
    """Settings pointing at ``dsn`` with optional storage overrides."""
    return Settings(
        db=DatabaseSettings(dsn=dsn),
        storage=StorageSettings(**storage),  # type: ignore[arg-type]
    )


# The storage paths the storage-touching integration tests run on: native partitions always (CI),
# and hypertables too when a TimescaleDB server is given (CITYOPS_TEST_TIMESCALE_DSN), so both
# paths keep passing the same tests.
STORAGE_PATHS = ["partitioned"] + (
    ["timescaledb"] if os.environ.get("CITYOPS_TEST_TIMESCALE_DSN") else []
)


@pytest.fixture(params=STORAGE_PATHS)
def storage_path(request: pytest.FixtureRequest) -> str:
    """The storage path of ``migrated_db``: 'partitioned', or 'timescaledb' (hypertables)."""
    return str(request.param)


def _migrate_with_areas(dsn: str, timescaledb: str) -> None:
    from cityops import registry
    from cityops.db import migrate

    settings = make_settings(dsn, timescaledb=timescaledb)
    with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:
        migrate.migrate(conn, settings.storage)
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        registry.import_areas(conn, registry.reference_area_records(), "reference")


@pytest.fixture(scope="session")
def migrated_template(pg_admin_dsn: str) -> Iterator[str]:
    """Name of a database migrated once per run (plain path, reference areas), never used directly.

    Each test's ``migrated_db`` is a copy of it (CREATE DATABASE ... TEMPLATE, a fraction of a
    second) instead of a migration of its own (seconds on this machine, and hundreds of tests use
    one). The migrations themselves run on empty databases in tests/integration/test_migrations.py,
    and test_copy_of_the_migrated_template_equals_a_fresh_migration there checks a copy
    against a fresh run.
    """
    name = f"cityops_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        _migrate_with_areas(_with_dbname(pg_admin_dsn, name), "off")
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            # No one may be connected to a template while it is copied; closing it to
            # connections keeps stray sessions (and autovacuum's routine visits) out.
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
        yield name
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# What CREATE DATABASE does not copy from a template: the database's own grants (the migrations
# GRANT CONNECT to cityops_readonly). Replayed on each copy, so the copy matches a fresh migration.
_DATABASE_GRANTS_SQL = """
SELECT r.rolname, a.privilege_type
FROM pg_database d, aclexplode(d.datacl) a
JOIN pg_roles r ON r.oid = a.grantee
WHERE d.datname = %s AND a.grantee <> d.datdba
ORDER BY 1, 2
"""


def clone_db(admin_dsn: str, template: str) -> Iterator[str]:
    """A new database copied from ``template`` (with its grants), dropped afterwards."""
    import time

    name = f"cityops_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        grants = conn.execute(_DATABASE_GRANTS_SQL, (template,)).fetchall()
        for attempt in range(50):
            try:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
                break
            except psycopg.errors.ObjectInUse:
                # A session still on the template (only ever a moment); try again shortly.
                if attempt == 49:
                    raise
                time.sleep(0.1)
        for role, privilege in grants:
            conn.execute(
                sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                    sql.SQL(privilege), sql.Identifier(name), sql.Identifier(role)
                )
            )
    try:
        yield _with_dbname(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def migrated_db(request: pytest.FixtureRequest, storage_path: str) -> Iterator[str]:
    """A new database with the cityops schema and the reference areas, on each storage path.

    On 'partitioned' it is a copy of ``migrated_template`` (migrated with TimescaleDB off); on
    'timescaledb' a new database on the TimescaleDB server migrated with ``timescaledb="require"``.
    """
    if storage_path == "timescaledb":
        dsn = str(request.getfixturevalue("timescale_db"))
        _migrate_with_areas(dsn, "require")
        yield dsn
        return
    admin = str(request.getfixturevalue("pg_admin_dsn"))
    yield from clone_db(admin, str(request.getfixturevalue("migrated_template")))


@pytest.fixture
def partitioned_db(empty_db: str) -> str:
    """A database migrated by itself on the plain path (tests of partition maintenance itself).

    Not a copy of ``migrated_template``: these tests check the partitions made around the
    moment of migration, so they migrate at their own start.
    """
    _migrate_with_areas(empty_db, "off")
    return empty_db


@pytest.fixture(scope="session")
def timescale_admin_dsn() -> str:
    """A server with TimescaleDB preloaded (CITYOPS_TEST_TIMESCALE_DSN); skipped when absent.

    CI tests the plain path; this skip is by design even under CI=true.
    """
    dsn = os.environ.get("CITYOPS_TEST_TIMESCALE_DSN")
    candidates = [dsn] if dsn else [os.environ.get("CITYOPS_TEST_DSN", DEFAULT_TEST_DSN)]
    for candidate in candidates:
        if candidate is None or _check_server(candidate):
            continue
        with psycopg.connect(candidate) as conn:
            row = conn.execute(
                "SELECT current_setting('timescaledb.disable_load', true) IS NOT NULL"
            ).fetchone()
        if row and row[0]:
            return candidate
    pytest.skip("no PostgreSQL with TimescaleDB preloaded (set CITYOPS_TEST_TIMESCALE_DSN)")


@pytest.fixture
def timescale_db(timescale_admin_dsn: str) -> Iterator[str]:
    """A new, empty database on the TimescaleDB server."""
    yield from _create_db(timescale_admin_dsn)


# --- MQTT -------------------------------------------------------------------------------------


def wait_for_port(port: int, timeout_s: float = 10.0) -> bool:
    """Wait until something listens on 127.0.0.1:port."""
    import socket
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


@dataclass(frozen=True)
class Broker:
    """A running mosquitto the test can reach."""

    host: str
    port: int


def start_mosquitto(config_text: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start a private mosquitto with ``config_text`` (``{port}`` and ``{dir}`` substituted)."""
    import shutil

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        _missing("mosquitto", "binary not installed")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(config_text.format(port=port, dir=workdir), encoding="utf-8")
    with (workdir / "mosquitto.log").open("wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    if not wait_for_port(port):
        proc.kill()
        _missing("mosquitto", f"did not start; see {workdir / 'mosquitto.log'}")
    return proc, port


PLAIN_BROKER_CONF = """\
# Tests run as root; without this mosquitto drops to its own user and cannot write its state.
user root
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {dir}/
max_queued_messages 100000
"""


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker for tests that need plain MQTT: CITYOPS_TEST_MQTT (host:port) or a private one.

    The private mosquitto allows anonymous clients and keeps state in a temporary folder; tests
    that need the project's auth/ACL configuration start their own from deploy/mosquitto.
    """
    given = os.environ.get("CITYOPS_TEST_MQTT")
    if given:
        host, _, port = given.rpartition(":")
        if not wait_for_port(int(port), 3.0) and host in ("127.0.0.1", "localhost"):
            _missing("mosquitto", f"nothing listens on {given}")
        yield Broker(host or "127.0.0.1", int(port))
        return
    proc, port = start_mosquitto(PLAIN_BROKER_CONF, tmp_path_factory.mktemp("mosquitto"))
    try:
        yield Broker("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

"""Property tests of the whole API against its OpenAPI schema: no 5xx, responses as documented.

The app runs under uvicorn on a real PostgreSQL with seeded data and an admin key (so every
operation is reachable past auth); schemathesis generates valid and invalid requests for every
operation. The example count is bounded to keep the run well under 90 s on a shared machine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from cityops import apikeys, registry
from cityops.db import migrate
from cityops.settings import Settings
from tests.conftest import Broker, _create_db, free_port, wait_for_port
from tests.integration.api.conftest import api_settings, seed_alert, seed_case, seed_devices

pytestmark = [pytest.mark.pg, pytest.mark.mqtt, pytest.mark.slow]

# Bounded for CI (< 90 s); set CITYOPS_TEST_SCHEMATHESIS_EXAMPLES for a deeper, random run.
DEEP = os.environ.get("CITYOPS_TEST_SCHEMATHESIS_EXAMPLES")
EXAMPLES_PER_OPERATION = int(DEEP) if DEEP else 25


@dataclass(frozen=True)
class LiveApi:
    """A running API: where it listens and an admin key."""

    base_url: str
    key: str


@pytest.fixture(scope="module")
def live_api(pg_admin_dsn: str, mqtt_broker: Broker) -> Iterator[LiveApi]:
    """The API under uvicorn on a migrated, seeded database of its own, with a broker."""
    db = _create_db(pg_admin_dsn)
    dsn = next(db)
    try:
        settings_ = api_settings(dsn, mqtt_port=mqtt_broker.port)
        with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:
            migrate.migrate(conn, settings_.storage)
        with psycopg.connect(dsn) as conn:
            registry.import_areas(conn, registry.reference_area_records(), "reference")
            _, key = apikeys.create_key(conn, "schemathesis", "admin")
        seed_devices(dsn)
        seed_alert(dsn)
        seed_alert(dsn, state="resolved")
        seed_case(dsn)
        app = create_app(settings_)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
        )
        thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
        thread.start()
        assert wait_for_port(port, 30), "the API did not start"
        try:
            yield LiveApi(base_url=f"http://127.0.0.1:{port}", key=key)
        finally:
            server.should_exit = True
            thread.join(30)
    finally:
        db.close()


# The bulk-import endpoints also take JSON Lines; its schema is a string, sent as UTF-8 text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")

# The OpenAPI document does not depend on the database, so it is read from an app that is
# built (never started) here; the requests go to the live app of the fixture.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=DEEP is None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case: Any, live_api: LiveApi) -> None:
    """Every operation: never a 5xx, and status, content type and body as documented."""
    case.call_and_validate(
        base_url=live_api.base_url,
        headers={"Authorization": f"Bearer {live_api.key}"},
        timeout=30,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )

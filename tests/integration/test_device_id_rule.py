"""Issue 16 item 6: one bad device id is refused with its line; the rest are imported and get
broker credentials (it used to abort `cityops broker credentials` for the whole fleet)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from cityops import registry
from ingest.broker import registered_identities, write_credentials

pytestmark = pytest.mark.pg

CSV = """\
device_id,kind,area_code,gateway_id,schedule_class,owner_unit
SL-1,streetlight,CY-JW,GW-1,mains,
SL 2,streetlight,CY-JW,,mains,
SL/3,streetlight,CY-JW,,mains,
SL+4,streetlight,CY-JW,,mains,
SL#5,streetlight,CY-JW,,mains,
SL-6,streetlight,CY-JW,GW 2,mains,
MH-7,manhole,CY-CW,,,telecom
"""


def test_bad_ids_are_refused_by_line_and_the_rest_credentialed(
    migrated_db: str, tmp_path: Path
) -> None:
    with psycopg.connect(migrated_db) as conn:
        report = registry.import_devices(conn, list(registry.parse_records(CSV, "csv")), "t")
    errors = {e.location: e.message for e in report.errors}
    assert set(errors) == {"line 3", "line 4", "line 5", "line 6", "line 7"}
    assert errors["line 3"].startswith("device_id: 'SL 2' contains ' '")
    assert "'/'" in errors["line 4"]
    assert "'+'" in errors["line 5"]
    assert "'#'" in errors["line 6"]
    assert errors["line 7"].startswith("gateway_id: 'GW 2'")
    assert report.stored == 2
    with psycopg.connect(migrated_db) as conn:
        ids = list(registered_identities(conn))
    assert ids == ["GW-1", "MH-7", "SL-1"]
    creds = write_credentials(tmp_path, ids, secret="s", service_passwords={})
    assert creds.users == 3
    assert creds.refused == ()

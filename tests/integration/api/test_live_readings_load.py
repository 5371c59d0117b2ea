"""Issue 16 item 8: following a busy kind on the SSE reading feed neither stalls the feed, nor
re-sends readings, nor floods a client (at most api.sse_kind_rate_max readings/s per kind).

Before the fix the hub re-read a 30 s overlap with LIMIT 2000: above ~67 readings/s of one kind
the overlap's already-sent head filled every query, the mark never moved and the feed stalled for
every client (then re-sent the same readings once their dedup keys expired).
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.integration.api.test_live import (  # fixtures of the live-feed tests
    Event,
    LiveServer,
    live_server,
    stream,
)

pytestmark = pytest.mark.pg
__all__ = ["live_server", "stream"]

BURST = 5000  # rows with one received_at: more than two pages of the overlap window


def test_a_burst_of_one_kind_does_not_stall_or_repeat(
    migrated_db: str, stream: Any, live_server: LiveServer
) -> None:
    reader = stream({"types": "reading", "devices": "HT-1"})
    live_server.wait_for_reading_poll()
    cap = getattr(live_server.hub, "kind_cap", 100)
    with psycopg.connect(migrated_db) as conn:
        conn.execute(
            "INSERT INTO heating_readings (device_id, ts, temperature_c, humidity_pct) "
            "SELECT 'HT-1', "
            "now() - make_interval(secs => n / 1000.0), 20.0, 40.0 "
            "FROM generate_series(1, %s) AS n",
            (BURST,),
        )
    with psycopg.connect(migrated_db) as conn:  # a later commit: must still come through
        conn.execute(
            "INSERT INTO heating_readings (device_id, ts, temperature_c, humidity_pct) "
            "VALUES ('HT-1', now() + interval '1 minute', 99.0, 40.0)"
        )
    got: list[Event] = []

    def read() -> None:
        while True:
            event = reader.next()
            if event.type != "reading":
                continue
            got.append(event)
            if event.data["values"]["temperature_c"] == 99.0:
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), f"the feed stalled after {len(got)} readings"
    keys = [(e.data["device_id"], e.data["ts"]) for e in got]
    assert len(keys) == len(set(keys)), "a reading was sent twice"
    # the burst was coalesced to what a client can follow: the newest reading of each device
    assert len(got) <= cap + 1
    assert live_server.hub.readings_coalesced >= BURST - cap

"""The cabinet-outage race end to end: engine with the shipped rules, notifier, a real webhook.

A cabinet that loses power does not darken its lamps' alerts all at once: its lamps report off
over a few minutes, so their ``lamp_off_while_due`` alerts fire one by one, and the cabinet alert
(80 % of the lamps firing) forms only minutes after the first. With ``group_wait: 0s`` (the
shipped live feed) the first lamps used to go out on their own before the cabinet alert
inhibited the rest. The engine now holds them (``hold_members``) until the cabinet alert forms.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from alerts.notify import ManualClock, Notifier, build_senders
from cityops import registry
from cityops.catalog import Kind
from cityops.settings import MqttSettings
from tests.integration.alerts.conftest import DEVICES, NIGHT, Clock, Harness, make_engine
from tests.integration.notify.conftest import WebhookServer
from tests.unit.notify.helpers import routes

pytestmark = pytest.mark.pg

ROUTES = """
version: 1
receivers:
  - {{name: desk, type: webhook, url: '{url}', timeout: 5s}}
routes:
  - name: lighting
    match: {{labels: {{alertname: [lamp_off_while_due, lamp_group_outage]}}}}
    receivers: [desk]
    group_by: [alertname, area_code]
    group_wait: 0s
    group_interval: 1s
    repeat_interval: 4h
"""


def test_a_cabinet_going_dark_lamp_by_lamp_is_one_webhook_call(
    migrated_db: str, webhook_server: Callable[..., WebhookServer]
) -> None:
    server = webhook_server()
    with psycopg.connect(migrated_db) as conn:
        registry.import_devices(conn, list(registry.parse_records(DEVICES, "csv")), "race")
    config = routes(ROUTES.format(url=server.url))
    notify_clock = ManualClock(NIGHT)
    notifier = Notifier(config, build_senders(config, MqttSettings()), clock=notify_clock).start()
    pool = ConnectionPool(
        migrated_db, min_size=1, max_size=4, open=True, kwargs={"options": "-c TimeZone=UTC"}
    )
    try:
        clock = Clock()
        h = Harness(engine=make_engine(migrated_db, pool, clock, []), clock=clock, dsn=migrated_db)
        h.engine.notify = notifier.submit
        # CAB-1's five lamps go dark two minutes apart; every dark lamp reports each minute.
        for m in range(41):
            at = NIGHT + timedelta(minutes=m)
            clock.now = at
            notify_clock.advance(at - notify_clock.now())
            state = "off" if m < 36 else "on"  # power is back at minute 36
            rows = [(f"SL-{i}", at, {"power_state": state}) for i in range(1, 6) if m >= 2 * i - 2]
            h.readings(Kind.STREETLIGHT, rows)
            h.tick(at)
            notifier.tick(at)
        assert notifier.wait_idle(20)
    finally:
        notifier.stop()
        pool.close()
    calls = [(r["purpose"], [a["rule"] for a in r["alerts"]]) for r in server.delivered]
    assert calls == [
        ("firing", ["lamp_group_outage"]),
        ("resolved", ["lamp_group_outage"]),
    ]
    assert server.delivered[0]["alerts"][0]["labels"]["cabinet_id"] == "CAB-1"

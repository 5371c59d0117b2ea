"""Issue 16 item 5: Receive Maximum bounds ingest's memory on session resume, whatever the backlog.

mosquitto 2.0 does not keep to the client's Receive Maximum when a session with a large backlog
resumes (19,623 un-acknowledged messages were seen with a limit of 2,000). The ingest client
enforces the bound itself: at Receive Maximum messages held, its network thread stops reading
until acknowledgements free room, so the rest waits in the broker (and the socket buffers).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest

from cityops.settings import IngestSettings, MqttSettings, Settings
from ingest.batcher import Delivery
from ingest.client import MqttSource
from tests.integration.ingest.conftest import (
    INGEST_PASSWORD,
    Publisher,
    SecureBroker,
    _start_broker,
    wait_for,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

RECEIVE_MAXIMUM = 100
BACKLOG = 50 * RECEIVE_MAXIMUM
PAYLOAD_BYTES = 20_000  # 5,000 x 20 kB = 100 MB of backlog


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Holder:
    """An on_delivery that keeps every message and acknowledges only when told."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: list[Delivery] = []
        self.max_held = 0
        self.seen: set[int] = set()
        self.total = 0

    def __call__(self, d: Delivery) -> None:
        with self.lock:
            self.held.append(d)
            self.max_held = max(self.max_held, len(self.held))
            self.seen.add(json.loads(d.payload)["n"])
            self.total += 1

    def take(self) -> list[Delivery]:
        with self.lock:
            out, self.held = self.held, []
        return out


def _source(broker: SecureBroker, holder: Holder, client_id: str) -> MqttSource:
    settings = Settings(
        mqtt=MqttSettings(
            host=broker.host,
            port=broker.port,
            username="cityops-ingest",
            password=INGEST_PASSWORD,  # type: ignore[arg-type]
        ),
        ingest=IngestSettings(receive_maximum=RECEIVE_MAXIMUM, http_port=0),
    )
    return MqttSource(settings, holder, client_id=client_id)


@pytest.mark.parametrize("restart_broker", [False, True], ids=["resume", "after-broker-restart"])
def test_resume_with_a_backlog_50x_receive_maximum_holds_at_most_receive_maximum(
    secure_broker: SecureBroker, restart_broker: bool
) -> None:
    client_id = f"ingest-backlog-{uuid.uuid4().hex[:6]}"
    holder = Holder()
    source = _source(secure_broker, holder, client_id)
    source.start()
    assert source.wait_subscribed(10), secure_broker.log()
    source.stop()  # the persistent session stays; the backlog queues in the broker
    pub = Publisher(secure_broker, "HT-1")
    pad = "x" * PAYLOAD_BYTES
    infos = [
        pub.publish(
            "cityops/v1/heating/HT-1/telemetry", json.dumps({"n": i, "pad": pad}), wait=False
        )
        for i in range(BACKLOG)
    ]
    for info in infos:
        info.wait_for_publish(60)
    pub.close()
    if restart_broker:  # the session and its backlog come back from the persistence file
        secure_broker.proc.terminate()
        secure_broker.proc.wait(30)
        restarted = _start_broker(
            secure_broker.workdir, secure_broker.port, secure_broker.device_port
        )
        secure_broker.proc = restarted.proc

    holder2 = Holder()
    rss_before = _rss_bytes()
    resumed = _source(secure_broker, holder2, client_id)
    resumed.start()
    try:
        assert wait_for(lambda: len(holder2.held) >= RECEIVE_MAXIMUM, 30), secure_broker.log()
        time.sleep(2.0)  # the broker would send the rest now if nothing stopped it
        # the bound: never more than Receive Maximum un-acknowledged messages in ingest
        assert holder2.max_held <= RECEIVE_MAXIMUM, holder2.max_held
        assert resumed.held <= RECEIVE_MAXIMUM
        grown = _rss_bytes() - rss_before
        assert grown < 40 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB"  # the backlog: 100 MB
        # acknowledging frees room; in the end every message arrives, none twice
        while holder2.total < BACKLOG or holder2.held:
            batch = holder2.take()
            if batch:
                assert resumed.ack_all(batch) == 0
            else:
                assert wait_for(lambda: bool(holder2.held), 30), (holder2.total, resumed.held)
        assert holder2.seen == set(range(BACKLOG))
        assert holder2.total == BACKLOG
        assert holder2.max_held <= RECEIVE_MAXIMUM
    finally:
        resumed.stop()

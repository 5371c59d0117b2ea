"""Grouping, resolution, inhibition, reminders, escalation and retry timing on a manual clock.

Delivery runs in the notifier's real worker threads; the senders here only record what they get
(the real receivers are exercised in tests/integration/notify).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from alerts.model import NoticeState
from alerts.notify import ManualClock, Notifier, NotifyMetrics, Purpose
from alerts.notify.delivery import backoff
from alerts.notify.routes import RoutesConfig
from alerts.rules import Severity
from tests.unit.notify.helpers import T0, RecordingSender, notice, routes

CONFIG = """
version: 1
defaults:
  group_by: [alertname, area_code]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
receivers:
  - {name: desk, type: webhook, url: "http://127.0.0.1:9/a"}
  - {name: supervisor, type: webhook, url: "http://127.0.0.1:9/b"}
  - {name: director, type: webhook, url: "http://127.0.0.1:9/c", send_resolved: false}
routes:
  - name: lighting
    match: {kind: streetlight}
    receivers: [desk]
    escalation:
      - {escalate_after: 30m, receivers: [supervisor]}
      - {escalate_after: 2h, receivers: [director]}
"""


class Harness:
    """A started notifier on a manual clock with recording senders."""

    def __init__(self, config: RoutesConfig, **senders: RecordingSender) -> None:
        self.clock = ManualClock(T0)
        self.metrics = NotifyMetrics()
        self.acked: set[int] = set()
        self.senders = {r.name: senders.get(r.name, RecordingSender()) for r in config.receivers}
        self.notifier = Notifier(
            config,
            self.senders,
            clock=self.clock,
            is_acknowledged=lambda alert_id: alert_id in self.acked,
            metrics=self.metrics,
        ).start()

    def advance(self, delta: timedelta) -> None:
        """Move the clock, tick, and wait until the workers have attempted what is due."""
        self.clock.advance(delta)
        self.notifier.tick()
        assert self.notifier.wait_idle(10)

    def sent(self, receiver: str) -> list[tuple[Purpose, int, list[int]]]:
        """(purpose, level, alert ids) of what ``receiver`` got."""
        return [
            (n.purpose, n.level, [a.alert_id for a in n.alerts])
            for n in self.senders[receiver].sent
        ]


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(routes(CONFIG))
    yield harness
    harness.notifier.stop()


def test_a_group_outage_is_one_notification(h: Harness) -> None:
    h.notifier.submit([notice(i) for i in range(300)])
    h.advance(timedelta(seconds=29))
    assert h.sent("desk") == []  # group_wait not over yet
    h.advance(timedelta(seconds=1))
    [(purpose, level, ids)] = h.sent("desk")
    assert (purpose, level) == (Purpose.FIRING, 0)
    assert sorted(ids) == list(range(300))
    note = h.senders["desk"].sent[0]
    assert note.group_labels == {"alertname": "lamp_off_while_due", "area_code": "110105001"}
    assert note.group_key == 'lighting:{alertname="lamp_off_while_due", area_code="110105001"}'


def test_notices_arriving_within_group_wait_join_the_group(h: Harness) -> None:
    for i in range(10):
        h.notifier.submit([notice(i)])
        h.advance(timedelta(seconds=2))
    h.advance(timedelta(seconds=10))
    assert [ids for _, _, ids in h.sent("desk")] == [list(range(10))]


def test_groups_split_by_group_by_labels(h: Harness) -> None:
    h.notifier.submit([notice(1, area="110105001"), notice(2, area="110105002"), notice(3)])
    h.advance(timedelta(seconds=30))
    assert sorted(ids for _, _, ids in h.sent("desk")) == [[1, 3], [2]]


def test_a_repeated_firing_notice_is_not_sent_again(h: Harness) -> None:
    h.notifier.submit([notice(1)])
    h.advance(timedelta(seconds=30))
    for _ in range(5):
        h.notifier.submit([notice(1)])
        h.advance(timedelta(minutes=6))
    assert h.sent("desk") == [(Purpose.FIRING, 0, [1])]


def test_later_changes_wait_for_group_interval(h: Harness) -> None:
    h.notifier.submit([notice(1)])
    h.advance(timedelta(seconds=30))
    h.notifier.submit([notice(2)])
    h.advance(timedelta(minutes=4))
    assert len(h.sent("desk")) == 1
    h.advance(timedelta(minutes=1))
    # Alertmanager's way: the update lists every alert of the group still firing.
    assert h.sent("desk")[1] == (Purpose.FIRING, 0, [1, 2])


def test_resolution_is_sent_for_notified_alerts(h: Harness) -> None:
    h.notifier.submit([notice(1), notice(2)])
    h.advance(timedelta(seconds=30))
    h.notifier.submit([notice(1, state=NoticeState.RESOLVED, at=h.clock.now())])
    h.advance(timedelta(minutes=5))
    purpose, _, _ = h.sent("desk")[1]
    assert purpose is Purpose.RESOLVED
    note = h.senders["desk"].sent[1]
    states = {a.alert_id: a.state for a in note.alerts}
    assert states == {1: NoticeState.RESOLVED, 2: NoticeState.FIRING}
    assert note.status == "firing"  # the group still has a firing alert
    h.notifier.submit([notice(2, state=NoticeState.RESOLVED, at=h.clock.now())])
    h.advance(timedelta(minutes=5))
    last = h.senders["desk"].sent[2]
    assert (last.purpose, last.status, [a.alert_id for a in last.alerts]) == (
        Purpose.RESOLVED,
        "resolved",
        [2],
    )
    assert h.notifier.open_groups() == {}


def test_fired_and_resolved_within_group_wait_says_nothing(h: Harness) -> None:
    h.notifier.submit([notice(1)])
    h.advance(timedelta(seconds=10))
    h.notifier.submit([notice(1, state=NoticeState.RESOLVED)])
    h.advance(timedelta(minutes=10))
    assert h.sent("desk") == []


def test_inhibited_notices_are_not_sent(h: Harness) -> None:
    h.notifier.submit([notice(1, inhibited=True), notice(2)])
    h.advance(timedelta(seconds=30))
    assert h.sent("desk") == [(Purpose.FIRING, 0, [2])]
    h.notifier.submit([notice(1, inhibited=True, state=NoticeState.RESOLVED)])
    h.advance(timedelta(minutes=10))
    assert len(h.sent("desk")) == 1


def test_reminders_repeat_until_acknowledged(h: Harness) -> None:
    h.notifier.submit([notice(1), notice(2)])
    h.advance(timedelta(seconds=30))
    h.advance(timedelta(minutes=59))
    assert len(h.sent("desk")) == 1
    h.advance(timedelta(minutes=1))
    reminders = [s for s in h.sent("desk") if s[0] is Purpose.REMINDER]
    assert [ids for _, _, ids in reminders] == [[1, 2]]
    h.acked.add(1)
    h.advance(timedelta(hours=1))
    reminders = [s for s in h.sent("desk") if s[0] is Purpose.REMINDER]
    assert [ids for _, _, ids in reminders] == [[1, 2], [2]]
    h.acked.add(2)
    for _ in range(3):
        h.advance(timedelta(hours=1))
    reminders = [s for s in h.sent("desk") if s[0] is Purpose.REMINDER]
    assert len(reminders) == 2  # acknowledged: the reminders stopped


def test_escalation_when_not_acknowledged(h: Harness) -> None:
    h.notifier.submit([notice(1), notice(2)])
    h.acked.add(2)
    h.advance(timedelta(seconds=30))
    h.advance(timedelta(minutes=29))
    assert h.sent("supervisor") == []
    h.advance(timedelta(seconds=30))  # 30 minutes after firing
    assert h.sent("supervisor") == [(Purpose.ESCALATION, 1, [1])]
    assert h.sent("director") == []
    # Reminders now reach the escalated level too, and only name the unacknowledged alert.
    h.advance(timedelta(minutes=31))
    assert (Purpose.REMINDER, 1, [1]) in h.sent("supervisor")
    assert (Purpose.REMINDER, 1, [1]) in h.sent("desk")
    h.advance(timedelta(minutes=60))  # 2 hours after firing
    assert h.sent("director") == [(Purpose.ESCALATION, 2, [1])]


def test_no_escalation_once_acknowledged(h: Harness) -> None:
    h.notifier.submit([notice(1)])
    h.advance(timedelta(seconds=30))
    h.acked.add(1)
    h.advance(timedelta(hours=3))
    assert h.sent("supervisor") == []
    assert h.sent("director") == []


def test_resolution_reaches_escalated_levels_that_want_it(h: Harness) -> None:
    h.notifier.submit([notice(1)])
    h.advance(timedelta(seconds=30))
    h.advance(timedelta(hours=2))
    assert [p for p, _, _ in h.sent("director")] == [Purpose.ESCALATION]
    h.notifier.submit([notice(1, state=NoticeState.RESOLVED, at=h.clock.now())])
    h.advance(timedelta(minutes=5))
    assert h.sent("desk")[-1][0] is Purpose.RESOLVED
    assert h.sent("supervisor")[-1][0] is Purpose.RESOLVED
    # director has send_resolved: false
    assert [p for p, _, _ in h.sent("director")] == [Purpose.ESCALATION]


def test_unrouted_notices_are_dropped(h: Harness) -> None:
    h.notifier.submit([notice(1, kind="manhole", severity=Severity.CRITICAL)])
    h.advance(timedelta(minutes=1))
    assert h.sent("desk") == []
    assert h.notifier.open_groups() == {}


def test_retries_back_off_exponentially_until_delivered() -> None:
    flaky = RecordingSender(fail_first=3)
    harness = Harness(routes(CONFIG), desk=flaky)
    try:
        harness.notifier.submit([notice(1)])
        harness.advance(timedelta(seconds=30))
        assert flaky.attempts == 1
        # Waits of 1 s, 2 s, 4 s: nothing happens a moment before each is due.
        for wait in (1, 2, 4):
            before = flaky.attempts
            harness.advance(timedelta(seconds=wait - 0.5))
            assert flaky.attempts == before
            harness.advance(timedelta(seconds=0.5))
            assert flaky.attempts == before + 1
        assert [a.alert_id for n in flaky.sent for a in n.alerts] == [1]
        assert harness.notifier.counts()["desk"] == {"failed": 3, "sent": 1}
        registry = harness.metrics.registry
        labels = {"receiver": "desk"}
        assert registry.get_sample_value("cityops_notification_attempts_failed_total", labels) == 3
        assert registry.get_sample_value("cityops_notifications_sent_total", labels) == 1
        harness.advance(timedelta(hours=0.5))
        assert flaky.attempts == 4  # delivered once, never again
    finally:
        harness.notifier.stop()


def test_permanent_failure_and_max_attempts_give_up() -> None:
    text = CONFIG.replace(
        'url: "http://127.0.0.1:9/b"}', 'url: "http://127.0.0.1:9/b", max_attempts: 2}'
    )
    broken = RecordingSender(fail_first=10**6)
    rejecting = RecordingSender(fail_first=10**6, permanent=True)
    harness = Harness(routes(text), desk=rejecting, supervisor=broken)
    try:
        harness.notifier.submit([notice(1)])
        harness.advance(timedelta(seconds=30))
        harness.advance(timedelta(minutes=30))  # escalates to supervisor
        for _ in range(5):
            harness.advance(timedelta(minutes=5))
        assert rejecting.attempts == 1
        assert broken.attempts == 2
        counts = harness.notifier.counts()
        assert counts["desk"]["given_up"] == 1
        assert counts["supervisor"]["given_up"] == 1
    finally:
        harness.notifier.stop()


def test_backoff_is_capped() -> None:
    cfg = routes(CONFIG).receiver("desk")
    assert [backoff(cfg, n).total_seconds() for n in (1, 2, 3, 9, 10, 99)] == [
        1,
        2,
        4,
        256,
        300,
        300,
    ]


def test_a_full_queue_defers_to_the_next_tick() -> None:
    text = CONFIG.replace(
        'url: "http://127.0.0.1:9/a"}', 'url: "http://127.0.0.1:9/a", queue_size: 1}'
    )
    desk = RecordingSender()
    harness = Harness(routes(text), desk=desk)
    worker = harness.notifier.workers["desk"]
    worker.stop()  # nobody takes from the queue: the first fills it, the others wait
    try:
        areas = ["110105001", "110105002", "110105003"]
        harness.notifier.submit([notice(i, area=a) for i, a in enumerate(areas)])
        harness.clock.advance(timedelta(seconds=30))
        harness.notifier.tick()
        assert worker.parked == 2
        worker.start()
        assert harness.notifier.wait_idle(10)
        assert len(desk.sent) == 1
        for _ in range(3):
            harness.advance(timedelta(seconds=1))
        assert sorted(a.alert_id for n in desk.sent for a in n.alerts) == [0, 1, 2]
    finally:
        harness.notifier.stop()


def test_acknowledgement_is_asked_only_when_it_decides_something() -> None:
    asked: list[int] = []
    config = routes(CONFIG)
    clock = ManualClock(T0)
    desk = RecordingSender()
    senders = {r.name: RecordingSender() for r in config.receivers} | {"desk": desk}

    def is_acknowledged(alert_id: int) -> bool:
        asked.append(alert_id)
        return True

    notifier = Notifier(config, senders, clock=clock, is_acknowledged=is_acknowledged).start()
    try:
        notifier.submit([notice(i) for i in range(300)])
        for _ in range(25):  # 25 minutes of ticks: nothing is due
            clock.advance(timedelta(minutes=1))
            notifier.tick()
        assert asked == []
        clock.advance(timedelta(minutes=5))  # the escalation at 30 min asks about each alert
        notifier.tick()
        assert sorted(asked) == list(range(300))
        for _ in range(4):  # acknowledged once is remembered: no more questions, no reminders
            clock.advance(timedelta(hours=1))
            notifier.tick()
        assert len(asked) == 300
        assert notifier.wait_idle(10)
        assert [n.purpose for n in desk.sent] == [Purpose.FIRING]
    finally:
        notifier.stop()


def test_an_unreadable_acknowledgement_keeps_reminding() -> None:
    config = routes(CONFIG)
    clock = ManualClock(T0)
    senders = {r.name: RecordingSender() for r in config.receivers}

    def is_acknowledged(alert_id: int) -> bool:
        raise RuntimeError("database gone")

    notifier = Notifier(config, senders, clock=clock, is_acknowledged=is_acknowledged).start()
    try:
        notifier.submit([notice(1)])
        clock.advance(timedelta(seconds=30))
        notifier.tick()
        clock.advance(timedelta(hours=1))
        notifier.tick()
        assert notifier.wait_idle(10)
        assert [n.purpose for n in senders["desk"].sent] == [Purpose.FIRING, Purpose.REMINDER]
        assert [n.purpose for n in senders["supervisor"].sent] == [Purpose.ESCALATION]
    finally:
        notifier.stop()


def test_an_alert_inhibited_after_notification_is_not_reminded_meanwhile(h: Harness) -> None:
    h.notifier.submit([notice(1), notice(2)])
    h.advance(timedelta(seconds=30))
    h.notifier.submit([notice(1, inhibited=True)])  # its cabinet went dark
    h.advance(timedelta(minutes=30))
    assert h.sent("supervisor") == [(Purpose.ESCALATION, 1, [2])]
    h.advance(timedelta(minutes=30))
    assert h.sent("desk")[-1] == (Purpose.REMINDER, 1, [2])
    h.notifier.submit([notice(1)])  # the cabinet is back, the lamp is still out
    h.advance(timedelta(minutes=1))
    assert h.sent("supervisor")[-1] == (Purpose.ESCALATION, 1, [1])
    # Its resolution is still sent, inhibited or not, since it was notified as firing.
    h.notifier.submit([notice(1, inhibited=True, state=NoticeState.RESOLVED)])
    h.advance(timedelta(minutes=5))
    assert h.sent("desk")[-1][0] is Purpose.RESOLVED

"""The demo's shutdown: every part gets a time limit, and the parts after a hung one still stop."""

from __future__ import annotations

import threading

from cityops.cli.demo_cmd import _Stack


def test_a_hung_part_does_not_keep_the_others_running() -> None:
    stopped: list[str] = []
    release = threading.Event()
    stack = _Stack()
    stack.push("database", lambda: stopped.append("database"))
    stack.push("failing", lambda: 1 / 0)
    stack.push("hung", release.wait)
    stack.push("api", lambda: stopped.append("api"))
    try:
        left = stack.close(limit_s=0.2)
    finally:
        release.set()
    # last pushed first; the hung and the failing part are passed over, the database still stops
    assert stopped == ["api", "database"]
    assert left == ["hung"]

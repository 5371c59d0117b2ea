"""The demo's shutdown: every part gets a time limit, and the parts after a hung one still stop."""

from __future__ import annotations

import threading
from pathlib import Path

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


def test_the_demo_keeps_its_data_in_a_folder_of_its_own_by_default() -> None:
    import getpass
    import tempfile

    from cityops.cli.demo_cmd import default_data_dir

    folder = default_data_dir()
    # Under the temporary directory (PostgreSQL, run as an unprivileged account by root, must
    # enter it), one per user, and the same every run, so a restart resumes it.
    assert folder.parent == Path(tempfile.gettempdir())
    assert folder.name == f"cityops-demo-{getpass.getuser()}"
    assert default_data_dir() == folder

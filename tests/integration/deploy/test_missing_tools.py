"""A machine without promtool: the Prometheus tests skip with one line locally, fail under CI.

Runs one real promtool test in a child pytest whose PATH has no tools at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.deploy.conftest import ROOT

pytestmark = pytest.mark.slow  # two child pytest runs, a few seconds each

TARGET = "tests/integration/deploy/test_prometheus.py::test_rule_files_pass_promtool"


def _run(tmp_path: Path, ci: bool, workers: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path / "empty-bin")  # no promtool, no anything
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if ci:
        env["CI"] = "true"
    args = [sys.executable, "-m", "pytest", TARGET, "-p", "no:cacheprovider", "-q"]
    args += ["-n", str(workers)]  # 0: in this process, as plain `pytest`
    args += ["--basetemp", str(tmp_path / f"{'ci' if ci else 'local'}-{workers}")]
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def test_missing_promtool_skips_locally_with_one_line_and_fails_under_ci(tmp_path: Path) -> None:
    (tmp_path / "empty-bin").mkdir()
    local = _run(tmp_path, ci=False)
    out = local.stdout + local.stderr
    assert local.returncode == 0, out
    assert "1 skipped" in out
    reason = "promtool not installed (Debian package prometheus; `bash .ci/run` installs it)"
    assert out.count(reason) == 1, out  # one line, not a traceback
    assert "not installed or not reachable here" in out  # the closing summary names it
    assert "Traceback" not in out
    # with workers (the README's `pytest -n 2`) the skip happens in a worker: the summary,
    # written here, still names what was missing
    workers = _run(tmp_path, ci=False, workers=2)
    out = workers.stdout + workers.stderr
    assert workers.returncode == 0, out
    assert "1 skipped" in out
    assert "not installed or not reachable here" in out
    assert "promtool (Debian package prometheus)" in out

    ci = _run(tmp_path, ci=True)
    out = ci.stdout + ci.stderr
    assert ci.returncode == 1, out
    assert "1 failed" in out
    assert "(CI=true: the tool is required)" in out

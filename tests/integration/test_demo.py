"""`cityops demo` on a machine with nothing configured: it starts its own PostgreSQL and
mosquitto, serves the page and the API with data flowing, and stops everything on Ctrl-C."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import psutil
import pytest

from tests.conftest import IN_CI

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]

# Bounds on waiting (the first start compiles the numba kernels), not speed claims.
START_S = 300.0
DATA_S = 180.0
STOP_S = 90.0


def _clean_env() -> dict[str, str]:
    """The environment of a newcomer: no CITYOPS_* configuration at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    return env


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A folder under /tmp the demo's unprivileged PostgreSQL account can enter."""
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        message = "mosquitto not installed"
        if IN_CI:
            pytest.fail(message + " (CI=true)")
        pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix="cityops-demo-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _lines(stream: object, out: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line.rstrip("\n"))
    out.put(None)


def test_demo_starts_serves_and_stops_cleanly(data_dir: Path, tmp_path: Path) -> None:
    stderr = (tmp_path / "demo.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cityops", "demo", "--port", "0", "--speed", "60",
         "--duration", "2h", "--data-dir", str(data_dir / "state")],
        stdout=subprocess.PIPE, stderr=stderr, text=True, env=_clean_env(),
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    printed: list[str] = []
    try:
        found = _read_url_and_key(lines, printed, proc, tmp_path)
        url, key = found["DEMO_URL"], found["DEMO_API_KEY"]
        text = "\n".join(printed)
        assert "private PostgreSQL" in text
        assert "private mosquitto" in text
        assert "4500 simulated devices" in text

        children = psutil.Process(proc.pid).children(recursive=True)
        names = {c.name() for c in children}
        assert "postgres" in names
        assert "mosquitto" in names

        page = httpx.get(url, timeout=30)
        assert page.status_code == 200
        assert "cityops" in page.text
        headers = {"X-API-Key": key}
        assert httpx.get(url + "readyz", timeout=30).status_code == 200
        areas = httpx.get(url + "api/v1/areas", headers=headers, timeout=30)
        assert areas.status_code == 200, areas.text

        # Data flows simulators -> broker -> ingest -> stream -> rates: a snapshot with rates.
        with httpx.stream(
            "GET", url + "api/v1/live", params={"types": "snapshot"}, headers=headers,
            timeout=DATA_S,
        ) as stream:  # fmt: skip
            assert stream.status_code == 200
            deadline = time.monotonic() + DATA_S
            for raw in stream.iter_lines():
                assert time.monotonic() < deadline, "no snapshot with rates"
                if raw.startswith("data: "):
                    snap = json.loads(raw[6:])
                    if snap["rates"] and sum(d["total"] for d in snap["devices"].values()):
                        break

        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not stop in {STOP_S} s; its log ends:\n{_tail(tmp_path)}")
        assert code == 0, _tail(tmp_path)
        for _ in range(100):
            if not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
                break
            time.sleep(0.1)
        alive = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"orphan processes: {alive}"
        # PostgreSQL shut down cleanly (it removes its pid file), and said so.
        assert not (data_dir / "state" / "postgres" / "pgdata" / "postmaster.pid").exists()
        rest = []
        while (line := lines.get(timeout=10)) is not None:
            rest.append(line)
        assert "cityops demo stopped" in "\n".join(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)  # the pipe is at its end once the demo has exited
        if proc.stdout is not None:
            proc.stdout.close()
        stderr.close()


def _read_url_and_key(
    lines: queue.Queue[str | None],
    printed: list[str],
    proc: subprocess.Popen[str],
    tmp_path: Path,
) -> dict[str, str]:
    """Read the demo's output until it printed the DEMO_URL and DEMO_API_KEY lines."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + START_S
    while "DEMO_API_KEY" not in found:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no URL/key within {START_S}s: {printed}")
        if line is None:
            pytest.fail(f"demo exited ({proc.wait()}): {printed} {_tail(tmp_path)}")
        printed.append(line)
        name, sep, value = line.partition("=")
        if sep and name in ("DEMO_URL", "DEMO_API_KEY"):
            found[name] = value.strip()
    return found


def _tail(tmp_path: Path) -> str:
    return (tmp_path / "demo.err").read_text(errors="replace")[-3000:]


def test_demo_says_what_to_do_without_a_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cityops.cli.demo_cmd import PrivateBroker
    from cityops.errors import ConfigError

    monkeypatch.setenv("PATH", str(tmp_path))  # no mosquitto on the PATH, none elsewhere
    with pytest.raises(ConfigError) as err:
        PrivateBroker.find(tmp_path, search=(str(tmp_path / "sbin" / "mosquitto"),))
    assert "install mosquitto" in str(err.value)
    assert "CITYOPS_MQTT_HOST" in str(err.value)


def test_demo_refuses_a_data_dir_postgres_cannot_enter(tmp_path: Path) -> None:
    from cityops.cli.demo_cmd import PrivatePostgres, find_postgres_bin
    from cityops.errors import ConfigError

    if os.geteuid() != 0:
        pytest.skip("only root runs PostgreSQL under another account")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    bin_dir, _ = find_postgres_bin()
    with pytest.raises(ConfigError, match="refuses root"):
        PrivatePostgres(bin_dir, locked / "pg", 1).start()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "nope"], "--scenario: unknown scenario 'nope'"),
        (["--duration", "5x"], "duration '5x'"),
    ],
)
def test_demo_rejects_bad_options_before_starting_anything(
    args: list[str], message: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "cityops", "demo", "--data-dir", str(state), *args],
        capture_output=True, text=True, env=_clean_env(), check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr
    assert not state.exists()  # no server was started

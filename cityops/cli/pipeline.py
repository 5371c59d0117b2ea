"""The ingest process's consumers: stream (live rates, snapshots) and alerts (engine, notifier).

This is the composition root's wiring, kept out of the command module so tests and the demo can
build the same pipeline. Order matters: the stream core sees a batch before the alert engine, so
the rates an aggregate rule reads include it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge

from cityops import clock, heartbeat
from cityops.batch import BatchConsumer, CommittedBatch
from cityops.errors import DatabaseError
from cityops.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(kw_only=True)
class Pipeline:
    """The consumers to hand to ingest and how to stop them (in reverse order of start)."""

    consumers: list[BatchConsumer] = field(default_factory=list)
    stoppers: list[Callable[[], None]] = field(default_factory=list)
    # name -> readiness of a consumer that writes to the database ({"ok": bool, "lag_s": ...})
    probes: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)

    def readiness(self) -> dict[str, Any]:
        """Each consumer's readiness and ``consumers``: all of them ok (for ingest's /readyz)."""
        state: dict[str, Any] = {name: probe() for name, probe in self.probes.items()}
        state["consumers"] = all(s.get("ok", False) for s in state.values())
        return state

    def stop(self) -> None:
        """Stop everything that was started, last first; one failure does not stop the rest."""
        while self.stoppers:
            stopper = self.stoppers.pop()
            try:
                stopper()
            except Exception:
                log.exception("pipeline_stop_failed")


class ProcessClock:
    """The process clock (cityops.clock) as the notifier's ``Clock``, read at each call."""

    def now(self) -> datetime:
        """The process clock's current instant."""
        return clock.now()


class ClockDriver:
    """Moves a simulated process clock to the newest reading time of each committed batch.

    The first consumer: the stream core and the alert engine then judge a batch at a "now" that
    includes it, and silence only once later data arrived without a device.
    """

    def __init__(self, sim_clock: clock.SimulatedClock) -> None:
        self.clock = sim_clock

    def on_batch(self, batch: CommittedBatch) -> None:
        """BatchConsumer: observe the batch's newest reading time."""
        newest = max((int(kb.ts_ms.max()) for kb in batch.readings.values() if len(kb)), default=0)
        if newest:
            self.clock.observe(newest)


class _Ticker:
    """Calls ``fn`` every ``interval_s`` seconds on a daemon thread until stopped."""

    def __init__(self, name: str, interval_s: float, fn: Callable[[], object]) -> None:
        self._stop = threading.Event()
        self._interval = interval_s
        self._fn = fn
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> _Ticker:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._fn()
            except Exception:
                log.exception("ticker_failed", ticker=self._thread.name)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, self._interval * 2))


def build_pipeline(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    with_stream: bool = True,
    with_alerts: bool = True,
) -> Pipeline:
    """Start the stream core and the alert engine with its notifier; return them as consumers.

    In a partitioned worker (``ingest.partitions`` > 1) both keep only the partition's areas
    (cityops.partition), the same areas whose readings this worker's ingest writes.
    """
    pipeline = Pipeline()
    if with_stream or with_alerts:
        wait_for_database(settings)
    process_clock = clock.current()
    if isinstance(process_clock, clock.SimulatedClock):
        # simulated time (the demo): the committed data moves the clock
        pipeline.consumers.append(ClockDriver(process_clock))
    try:
        if with_stream:
            from stream.live import start_live

            live, stop_live = start_live(settings)
            live.clock = clock.seconds  # "now" for the last complete hour and offline sensors
            # the catch-up point right after it: recomputes take their snapshot between batches
            pipeline.consumers += [live, live.catch_up_point()]
            pipeline.stoppers.append(stop_live)
            pipeline.probes["stream"] = live.readiness
            if registry is not None:
                _gauge(
                    registry,
                    "cityops_stream_lag_seconds",
                    live.lag_s,
                    "Seconds committed batches have waited to reach rates_hourly (0: current).",
                )
                _gauge(
                    registry,
                    "cityops_stream_db_up",
                    lambda: float(live.db_ok),
                    "1 when the stream core's last database work succeeded.",
                )
                _gauge(
                    registry,
                    "cityops_stream_db_failures",
                    lambda: live.flush_failures,
                    "Failed database attempts of the stream core since start.",
                )
                _gauge(registry, "cityops_stream_recomputed_hours", lambda: live.recomputed_hours,
                       "Hours recomputed from the stored readings since start.")  # fmt: skip
            # registry changes (devices added, retired, moved) reach the live rates too;
            # stopped before the live consumer (stoppers run last first), whose connection it uses
            refresh = _Ticker(
                "stream-registry", settings.ingest.registry_refresh_s, live.reload_registry
            )
            pipeline.stoppers.append(refresh.start().stop)
        if with_alerts:
            _start_alerts(settings, registry, pipeline)
    except BaseException:
        pipeline.stop()
        raise
    return pipeline


def wait_for_database(settings: Settings, stop: threading.Event | None = None) -> None:
    """Block until PostgreSQL answers, retrying with ingest's back-off (as ingest's start does)."""
    from cityops.db import pool

    backoff = heartbeat.Backoff(settings.ingest.retry_initial_s, settings.ingest.retry_max_s)
    while True:
        try:
            pool.connect(settings.db, autocommit=True).close()
            return
        except DatabaseError as err:
            wait = backoff.failed()
            log.warning("pipeline_db_unavailable", error=str(err), retry_in_s=wait)
            if stop is not None and stop.wait(wait):
                raise
            if stop is None:
                time.sleep(wait)


def _gauge(registry: CollectorRegistry, name: str, fn: Callable[[], float], doc: str) -> None:
    Gauge(name, doc, registry=registry).set_function(fn)


def _start_alerts(
    settings: Settings, registry: CollectorRegistry | None, pipeline: Pipeline
) -> None:
    from alerts import store
    from alerts.engine import AlertEngine
    from alerts.notify import Notifier, NotifyMetrics, build_senders, load_routes
    from alerts.rules import RuleHolder, Severity
    from cityops.db.pool import make_pool
    from cityops.partition import area_filter
    from cityops.schedule import HeatingCalendar, LightingSchedule

    rules = RuleHolder(settings.alerts.rules_file)
    routes = load_routes(settings.notify.routes_file)
    pool = make_pool(settings.db, name="alerts")
    pool.open(wait=True, timeout=settings.db.connect_timeout_s * 3)
    pipeline.stoppers.append(pool.close)

    def is_acknowledged(alert_id: int) -> bool:
        with pool.connection() as conn:
            return store.is_acknowledged(conn, alert_id)

    notifier = Notifier(
        routes,
        build_senders(routes, settings.mqtt),
        is_acknowledged=is_acknowledged,
        pool=pool,
        metrics=NotifyMetrics(registry),
        clock=ProcessClock(),
    )
    notifier.start(tick_interval_s=settings.notify.tick_interval_s)
    pipeline.stoppers.append(notifier.stop)
    engine = AlertEngine(
        rules=rules,
        pool=pool,
        schedule=LightingSchedule(settings.schedule, settings.timezone),
        calendar=HeatingCalendar(settings.schedule, settings.timezone),
        notify=notifier.submit,
        case_severities=[Severity(s) for s in settings.alerts.case_severities],
        flap_count=settings.alerts.flap_count,
        flap_window=timedelta(seconds=settings.alerts.flap_window_s),
        link_radius_m=settings.alerts.link_radius_m,
        link_window=timedelta(hours=settings.alerts.link_window_h),
        owns_area=area_filter(settings.ingest),
        backoff=heartbeat.Backoff(settings.ingest.retry_initial_s, settings.ingest.retry_max_s),
        consumer=heartbeat.consumer_name("alerts", settings.ingest),
        max_lag_s=settings.stream.max_lag_s,
        db_timeout_s=settings.db.connect_timeout_s,
    )
    pipeline.consumers.append(engine)
    pipeline.stoppers.append(engine.stop)  # after the tickers stop, before the notifier and pool
    pipeline.probes["alerts"] = engine.readiness
    if registry is not None:
        _gauge(
            registry,
            "cityops_alerts_lag_seconds",
            engine.lag_s,
            "Seconds the oldest alert transition not stored yet has waited (0: current).",
        )
        _gauge(
            registry,
            "cityops_alerts_db_up",
            lambda: float(engine.db_ok),
            "1 when the alert engine's last database work succeeded.",
        )
        _gauge(registry, "cityops_alerts_unstored_transitions", lambda: len(engine._unstored),
               "Alert transitions kept in memory until the database answers.")  # fmt: skip
    ticker = _Ticker("alerts-tick", settings.alerts.tick_s, engine.tick).start()
    pipeline.stoppers.append(ticker.stop)
    registry_ticker = _Ticker("alerts-registry", 60.0, engine.reload_registry).start()
    pipeline.stoppers.append(registry_ticker.stop)
    log.info("alerts_started", rules=len(rules.rules.rules), receivers=len(routes.receivers))

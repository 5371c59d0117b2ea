"""Notifications: routing alert notices to receivers, grouped, retried, reminded and escalated.

Wiring (see docs/alerts.md, "Notifications")::

    config = load_routes(settings.notify.routes_file)
    notifier = Notifier(
        config,
        build_senders(config, settings.mqtt),
        is_acknowledged=lambda alert_id: ...,
        pool=pool,
    ).start(tick_interval_s=settings.notify.tick_interval_s)
    notifier.submit(notices)  # after each engine batch
    ...
    notifier.stop()
"""

from alerts.notify.clock import Clock, ManualClock, SystemClock
from alerts.notify.dispatcher import Notifier
from alerts.notify.metrics import NotifyMetrics
from alerts.notify.model import DeliveryError, Notification, Purpose
from alerts.notify.receivers import Sender, build_senders
from alerts.notify.routes import RoutesConfig, RoutesError, load_routes, parse_routes

__all__ = [
    "Clock",
    "DeliveryError",
    "ManualClock",
    "Notification",
    "Notifier",
    "NotifyMetrics",
    "Purpose",
    "RoutesConfig",
    "RoutesError",
    "Sender",
    "SystemClock",
    "build_senders",
    "load_routes",
    "parse_routes",
]

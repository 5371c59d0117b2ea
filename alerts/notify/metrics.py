"""Prometheus metrics of notification delivery, in a registry the caller chooses."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class NotifyMetrics:
    """Per receiver: notifications sent, failed attempts, notifications given up."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sent = Counter(
            "cityops_notifications_sent", "Notifications delivered.", ["receiver"], registry=r
        )
        self.failed = Counter(
            "cityops_notification_attempts_failed",
            "Delivery attempts that failed (each is retried unless given up).",
            ["receiver"],
            registry=r,
        )
        self.given_up = Counter(
            "cityops_notifications_given_up",
            "Notifications never delivered (permanent error or attempts exhausted).",
            ["receiver"],
            registry=r,
        )

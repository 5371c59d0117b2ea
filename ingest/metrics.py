"""Prometheus metrics of one ingest service, in its own registry (tests run several at once)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10_000, 50_000)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_AGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86_400)


class IngestMetrics:
    """Counters, gauges and histograms of the ingest path."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "cityops_ingest_messages_received", "MQTT messages received.", registry=r
        )
        self.readings = Counter(
            "cityops_ingest_readings_received", "Readings carried by the messages.", registry=r
        )
        self.rows_stored = Counter(
            "cityops_ingest_rows_stored", "New reading rows committed.", ["kind"], registry=r
        )
        self.duplicates = Counter(
            "cityops_ingest_duplicate_rows",
            "Reading rows already stored (redeliveries).",
            ["kind"],
            registry=r,
        )
        self.complaints = Counter(
            "cityops_ingest_complaints_stored", "New complaints committed.", registry=r
        )
        self.statuses = Counter(
            "cityops_ingest_status_reports_stored", "Online/offline reports stored.", registry=r
        )
        self.dead_letters = Counter(
            "cityops_ingest_dead_letters", "Dead letters written.", ["reason"], registry=r
        )
        self.batch_rows = Histogram(
            "cityops_ingest_batch_rows",
            "Rows per committed batch.",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_messages = Histogram(
            "cityops_ingest_batch_messages",
            "Messages per committed batch.",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "cityops_ingest_commit_seconds",
            "Time to write and commit one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reading_age = Histogram(
            "cityops_ingest_reading_age_seconds",
            "Age of readings (commit time minus reading ts), sampled up to 100 per batch.",
            buckets=_AGE_BUCKETS,
            registry=r,
        )
        self.receive_to_commit = Histogram(
            "cityops_ingest_receive_to_commit_seconds",
            "Time from a batch's first message arriving to its commit.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "cityops_ingest_queue_depth", "Messages received but not yet batched.", registry=r
        )
        self.unacked = Gauge(
            "cityops_ingest_unacked_messages",
            "Messages received and not yet acknowledged.",
            registry=r,
        )
        self.db_retries = Counter(
            "cityops_ingest_db_retries",
            "Batch writes retried after a database error.",
            registry=r,
        )
        self.db_up = Gauge("cityops_ingest_db_up", "1 when the last write succeeded.", registry=r)
        self.broker_up = Gauge(
            "cityops_ingest_broker_up", "1 while connected and subscribed.", registry=r
        )
        self.consumer_errors = Counter(
            "cityops_ingest_consumer_errors",
            "Batch consumers that raised.",
            ["consumer"],
            registry=r,
        )
        self.partition_skipped = Counter(
            "cityops_ingest_partition_skipped",
            "Readings and messages left to another partition's worker (ingest.partitions).",
            registry=r,
        )
        self.stale_acks = Counter(
            "cityops_ingest_stale_acks",
            "Acks not sent because the connection changed (the broker redelivers).",
            registry=r,
        )

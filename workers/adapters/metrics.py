"""Every Prometheus metric the workers export, named in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mt5fleet.workers.core.policy import SkipReason

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class AdjustMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.signals = Counter("mt5fleet_worker_signals_total", "Signals handled per owned partition, by result",
                               ["result"], registry=r)
        self.commands = Counter("mt5fleet_worker_commands_published_total",
                                "Adjusted commands stored by JetStream", registry=r)
        self.skips = Counter("mt5fleet_worker_skips_total", "Users skipped for a signal, by reason", ["reason"],
                             registry=r)
        for reason in (*SkipReason, "error"):  # every reason shows, at 0 until it happens: alerts see a series
            self.skips.labels(str(reason))
        self.invalid = Counter("mt5fleet_worker_invalid_messages_total", "Inbound messages refused, by kind",
                               ["kind"], registry=r)
        self.decisions = Counter("mt5fleet_worker_decisions_recorded_total",
                                 "Decision records per (signal, user): stored, or existing (decided before: "
                                 "a redelivery; its recorded commands are republished)", ["outcome"], registry=r)
        for outcome in ("stored", "existing"):
            self.decisions.labels(outcome)
        self.signal_to_worker = Histogram("mt5fleet_worker_signal_to_worker_seconds",
                                          "Signal created -> picked up by the owning worker",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.adjust_time = Histogram("mt5fleet_worker_adjust_seconds",
                                     "Adjusting one signal for every user of a partition and publishing",
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.take_over = Histogram("mt5fleet_worker_take_over_seconds",
                                   "Taking a partition over: its users' state decoded and their prices read",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.fetch_errors = Counter("mt5fleet_worker_fetch_errors_total",
                                    "Failed pulls from a partition's consumer (NATS away, consumer missing)",
                                    registry=r)
        self.partitions = Gauge("mt5fleet_worker_partitions_owned", "User partitions this replica owns",
                                registry=r)
        self.users = Gauge("mt5fleet_worker_users_known", "Users with a ClientConfig in this worker's state",
                           registry=r)
        self.state_messages = Counter("mt5fleet_worker_state_messages_total",
                                      "Messages applied to this worker's view of the fleet, by stream", ["stream"],
                                      registry=r)
        self.lease_failures = Counter("mt5fleet_worker_lease_failures_total",
                                      "Lease renewal rounds that failed (NATS away, bucket missing)", registry=r)
        self.recreated = recreated_counter(r)


def recreated_counter(registry: CollectorRegistry) -> Counter:
    """Streams, buckets and consumers a worker found missing and created again from the layout."""
    return Counter("mt5fleet_worker_recreated_total", "JetStream resources found missing and re-created from the "
                   "layout, by name", ["resource"], registry=registry)


class CatchupMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.requests = Counter("mt5fleet_catchup_requests_total", "Catch-up page requests, by result "
                                "(served, refused, failed)", ["result"], registry=r)
        self.commands = Counter("mt5fleet_catchup_commands_served_total", "Stored commands sent in catch-up pages",
                                registry=r)
        self.refused = Counter("mt5fleet_catchup_refused_total", "Catch-up requests refused, by reason",
                               ["reason"], registry=r)
        self.page_time = Histogram("mt5fleet_catchup_page_seconds", "Reading and answering one catch-up page",
                                   buckets=LATENCY_BUCKETS, registry=r)

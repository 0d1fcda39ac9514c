"""Every Prometheus metric the operator exports, named in one place."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.reconciles = Counter("mt5fleet_operator_reconciles_total",
                                  "TradingClient reconciles, by result (ok, invalid, error, deleted)",
                                  ["result"], registry=r)
        self.duration = Histogram("mt5fleet_operator_reconcile_seconds", "Time to reconcile one TradingClient",
                                  buckets=RECONCILE_BUCKETS, registry=r)
        self.clients = Gauge("mt5fleet_operator_clients", "TradingClients by tier and phase", ["tier", "phase"],
                             registry=r)
        self.changes = Counter("mt5fleet_operator_changes_total",
                               "Resources the appliers created, updated or deleted", ["resource", "change"],
                               registry=r)
        self.worker_replicas = Gauge("mt5fleet_operator_worker_replicas",
                                     "Adjustment-worker replicas the operator asked for", registry=r)
        self.broker_mismatches = Gauge(
            "mt5fleet_operator_broker_mismatches",
            "Users whose agent reports an MT5 account on another broker's server than their TradingClient "
            "declares (AgentConnected=False, BrokerMismatch; their config is close-only)", registry=r)
        # Every replica serves /metrics, the followers too: this says which one reconciles.
        self.leader = Gauge("mt5fleet_operator_leader",
                            "1 while this replica holds the Lease and reconciles, 0 while it stands by", registry=r)
        self._seen: set[tuple[str, str]] = set()

    def set_clients(self, tiers_and_phases: Iterable[tuple[str, str]]) -> None:
        """Replace the per-tier/phase counts; a combination that emptied reads 0, not stale."""
        counts = Tally(tiers_and_phases)
        for key in self._seen | set(counts):
            self.clients.labels(*key).set(counts.get(key, 0))
        self._seen |= set(counts)

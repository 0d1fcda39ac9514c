"""The fleet-health exporter: every agent's heartbeat, republished as in-cluster Prometheus
metrics per user, because the cluster's Prometheus rarely reaches a trader's VPS.

Ages are computed at scrape time (a custom collector), so an agent that went silent shows
its heartbeat getting older and ``connected`` dropping to 0 without any new message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from nats.js import api
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.account import HeartbeatInfo
from mt5fleet.proto.v1 import heartbeat_pb2
from mt5fleet.proto.validation import ValidationError, check_heartbeat, decode

log = logging.getLogger("mt5fleet.worker.health")

# Three missed heartbeats (sent every 5 s) and an agent counts as disconnected.
STALE_AFTER_S = 15.0


class FleetHealth:
    def __init__(self, *, now_ms: Callable[[], int] | None = None, stale_after_s: float = STALE_AFTER_S) -> None:
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.stale_after_s = stale_after_s
        self.beats: dict[str, HeartbeatInfo] = {}
        self.invalid = 0

    def on_heartbeat(self, subject: str, raw: bytes) -> None:
        try:
            user_id, _ = subjects.parse_user_subject(subject)
            beat = check_heartbeat(decode(heartbeat_pb2.Heartbeat, raw), self.now_ms())
            if beat.user_id != user_id:
                raise ValueError(f"heartbeat for {beat.user_id!r} on {subject}")
        except (ValidationError, subjects.InvalidName, ValueError) as exc:
            self.invalid += 1
            log.warning("skipped a bad heartbeat on %s: %s", subject, exc)
            return
        self.beats[user_id] = beat

    async def follow(self, js: Any) -> Any:
        async def callback(message: Any) -> None:
            self.on_heartbeat(message.subject, message.data)
        return await js.subscribe(subjects.user_wildcard(subjects.Channel.HEARTBEAT), ordered_consumer=True,
                                  deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT, cb=callback)

    def collect(self) -> Iterator[Metric]:
        now = self.now_ms()
        families = {
            "connected": GaugeMetricFamily("mt5fleet_fleet_agent_connected",
                                           "1 while the agent's heartbeats are fresh", labels=["user_id"]),
            "age": GaugeMetricFamily("mt5fleet_fleet_heartbeat_age_seconds", "Age of the agent's last heartbeat",
                                     labels=["user_id"]),
            "terminal": GaugeMetricFamily("mt5fleet_fleet_terminal_connected",
                                          "1 while the agent reports its MT5 terminal connected", labels=["user_id"]),
            "latency": GaugeMetricFamily("mt5fleet_fleet_command_latency_ms",
                                         "The agent's latest signal-to-execution latency", labels=["user_id"]),
            "publish": GaugeMetricFamily("mt5fleet_fleet_publish_latency_ms",
                                         "The agent's latest JetStream publish latency", labels=["user_id"]),
            "outbox": GaugeMetricFamily("mt5fleet_fleet_outbox_depth", "Reports waiting in the agent's outbox",
                                        labels=["user_id"]),
            "staleness": GaugeMetricFamily("mt5fleet_fleet_price_staleness_ms",
                                           "Age of the agent's oldest quote when it last reported", labels=["user_id"]),
        }
        for user_id, beat in sorted(self.beats.items()):
            age = max(now - beat.time_ms, 0) / 1000
            families["connected"].add_metric([user_id], 1.0 if age <= self.stale_after_s else 0.0)
            families["age"].add_metric([user_id], age)
            families["terminal"].add_metric([user_id], 1.0 if beat.terminal_connected else 0.0)
            families["latency"].add_metric([user_id], beat.last_command_latency_ms)
            families["publish"].add_metric([user_id], beat.last_publish_latency_ms)
            families["outbox"].add_metric([user_id], beat.outbox_depth)
            families["staleness"].add_metric([user_id], beat.price_staleness_ms)
        yield from families.values()
        yield GaugeMetricFamily("mt5fleet_fleet_invalid_heartbeats", "Heartbeats refused by validation",
                                value=self.invalid)

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry()
        registry.register(self)
        return registry

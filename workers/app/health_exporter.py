"""The fleet-health exporter: every agent's heartbeat, republished as in-cluster Prometheus
metrics per user, because the cluster's Prometheus rarely reaches a trader's VPS.

Ages are computed at scrape time (a custom collector), so an agent that went silent shows
its heartbeat getting older and ``connected`` dropping to 0 without any new message.

Heartbeats are read by a ``Follower`` (last per subject, then live): it comes back by
itself when ``TC_HEARTBEAT`` (memory) returns empty after a server restart, re-creating the
stream from the layout if nobody else has, and ``/readyz`` fails while it cannot follow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.account import HeartbeatInfo
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.follow import Follower, FollowOptions
from mt5fleet.proto.runtime.probes import Health
from mt5fleet.proto.subjects import JetStreamLayout
from mt5fleet.proto.v1 import heartbeat_pb2
from mt5fleet.proto.validation import ValidationError, check_heartbeat, decode

log = logging.getLogger("mt5fleet.worker.health")

# Three missed heartbeats (sent every 5 s) and an agent counts as disconnected.
STALE_AFTER_S = 15.0
# Not following the heartbeats this long: not ready; this long while connected: restart.
FOLLOW_BUDGET_S = 30.0
WEDGED_AFTER_S = 300.0


class FleetHealth:
    def __init__(self, *, now_ms: Callable[[], int] | None = None, stale_after_s: float = STALE_AFTER_S) -> None:
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.stale_after_s = stale_after_s
        self.beats: dict[str, HeartbeatInfo] = {}
        self.invalid = 0
        self._registry = CollectorRegistry()
        self._registry.register(self)
        self.health = Health(registry=self._registry)   # its check is added by follow()

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

    async def follow(self, nc: Any, *, layout: JetStreamLayout | None = None,
                     options: FollowOptions | None = None, budget_s: float = FOLLOW_BUDGET_S) -> Follower:
        """Follow every agent's heartbeat; ``health`` says when that has stopped."""
        js, layout = nc.jetstream(), layout or JetStreamLayout()

        async def ensure() -> None:
            await bootstrap.create_missing(js, layout, subjects.HEARTBEAT_STREAM)
        follower = await Follower(nc, subjects.HEARTBEAT_STREAM, lambda m: self.on_heartbeat(m.subject, m.data),
                                  ensure=ensure, options=options).start()
        self.health.connected = lambda: nc.is_connected
        self.health.add("heartbeats", lambda: follower.problem(budget_s), wedged_after_s=WEDGED_AFTER_S)
        return follower

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
        return self._registry

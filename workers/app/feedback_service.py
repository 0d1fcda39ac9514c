"""Execution feedback: every ExecutionReport, from the shared durable consumer
``TC_EXECUTIONS/execution-feedback`` (replicas split the load), becomes fleet metrics:
outcomes by status and refusal reason, slippage against the adjusted and the reference
price, and the latency of each leg (signal -> worker -> agent -> fill). The per-signal
position index the close/modify fan-out needs is kept by every adjustment worker itself
(``fleet_state``), from the same stream.

The durable consumer is created from the JetStream layout when it is missing (a worker
started before ``nats bootstrap``, or the consumer deleted behind its back), resuming after
the last report this worker acknowledged; ``/readyz`` fails while pulling keeps failing."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.trading import Execution, ExecutionStatus
from mt5fleet.proto.runtime.probes import Health
from mt5fleet.proto.subjects import JetStreamLayout
from mt5fleet.proto.v1 import execution_pb2
from mt5fleet.proto.validation import ValidationError, check_execution, decode
from mt5fleet.workers.adapters.durable import DurablePuller
from mt5fleet.workers.adapters.metrics import LATENCY_BUCKETS, recreated_counter

log = logging.getLogger("mt5fleet.worker.feedback")
SLIPPAGE_BUCKETS = (-20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50)


class FeedbackMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.executions = Counter("mt5fleet_fleet_executions_total", "Execution reports, by status and reason",
                                  ["status", "reason"], registry=r)
        self.slippage = Histogram("mt5fleet_fleet_slippage_points",
                                  "Fill slippage in points (positive = worse), against the adjusted or reference price",
                                  ["against"], buckets=SLIPPAGE_BUCKETS, registry=r)
        # prometheus_client drops a histogram's _sum when a bucket is negative: the net
        # sum is exported here so that averages (net / count) can still be computed.
        self.slippage_net = Gauge("mt5fleet_fleet_slippage_points_net", "Sum of fill slippage in points",
                                  ["against"], registry=r)
        self.latency = Histogram("mt5fleet_fleet_latency_seconds",
                                 "Command latency by leg: signal_to_worker, worker_to_agent, agent_to_fill, "
                                 "signal_to_fill", ["leg"], buckets=LATENCY_BUCKETS, registry=r)
        self.invalid = Counter("mt5fleet_fleet_invalid_reports_total", "Execution reports refused by validation",
                               registry=r)
        self.fetch_errors = Counter("mt5fleet_fleet_feedback_fetch_errors_total",
                                    "Failed pulls from execution-feedback (NATS away, consumer missing)", registry=r)
        self.recreated = recreated_counter(r)


# Pulling failing this long: not ready; this long while connected: restart.
FETCH_BUDGET_S = 30.0
WEDGED_AFTER_S = 300.0


def record(metrics: FeedbackMetrics, report: Execution) -> None:
    status = report.status.name.lower()
    metrics.executions.labels(status, report.reject_code or "").inc()
    if report.status in (ExecutionStatus.FILLED, ExecutionStatus.PARTIAL) and report.fill_price:
        for against, points in (("adjusted", report.slippage_points),
                                ("reference", report.slippage_reference_points)):
            metrics.slippage.labels(against).observe(points)
            metrics.slippage_net.labels(against).inc(points)
    legs = {
        "worker_to_agent": _span(report.command_created_at_ms, report.received_at_ms),
        "agent_to_fill": _span(report.received_at_ms, report.executed_at_ms),
        "signal_to_worker": _span(report.signal_created_at_ms, report.command_created_at_ms),
        "signal_to_fill": _span(report.signal_created_at_ms, report.executed_at_ms),
    }
    for leg, seconds in legs.items():
        if seconds is not None:
            metrics.latency.labels(leg).observe(seconds)


def _span(start_ms: int | None, end_ms: int | None) -> float | None:
    if not start_ms or not end_ms or end_ms < start_ms:
        return None
    return (end_ms - start_ms) / 1000


class FeedbackWorker:
    def __init__(self, nc: Any, *, metrics: FeedbackMetrics | None = None, now_ms: Any = None,
                 layout: JetStreamLayout | None = None, fetch_budget_s: float = FETCH_BUDGET_S,
                 clock: Any = time.monotonic) -> None:
        self.metrics = metrics or FeedbackMetrics()
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.puller = DurablePuller(nc, layout or JetStreamLayout(), subjects.EXECUTIONS_CONSUMER, clock=clock,
                                    on_error=self.metrics.fetch_errors.inc,
                                    on_recreated=lambda name: self.metrics.recreated.labels(name).inc())
        self.health = Health(registry=self.metrics.registry, connected=lambda: nc.is_connected)
        self.health.add("fetching", lambda: self.puller.problem(fetch_budget_s), wedged_after_s=WEDGED_AFTER_S)
        self._stop = asyncio.Event()

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                for message in await self.puller.fetch(64, timeout=1):
                    try:  # acknowledged first: a report that cannot be is redelivered, not counted twice
                        await message.ack()
                    except Exception as exc:  # NATS away
                        log.debug("acknowledging an execution report failed: %s", exc)
                        continue
                    self.puller.finished(message)
                    self.handle(message.data)
        finally:
            await self.puller.close()

    def handle(self, raw: bytes) -> None:
        try:
            report = check_execution(decode(execution_pb2.ExecutionReport, raw), self.now_ms())
        except ValidationError as exc:
            self.metrics.invalid.inc()
            log.warning("skipped a bad execution report: %s", exc)
            return
        record(self.metrics, report)

    def stop(self) -> None:
        self._stop.set()

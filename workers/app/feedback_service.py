"""Execution feedback: every ExecutionReport, from the shared durable consumer
``TC_EXECUTIONS/execution-feedback`` (replicas split the load), becomes fleet metrics:
outcomes by status and refusal reason, slippage against the adjusted and the reference
price, and the latency of each leg (signal -> worker -> agent -> fill). The per-signal
position index the close/modify fan-out needs is kept by every adjustment worker itself
(``fleet_state``), from the same stream."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.trading import Execution, ExecutionStatus
from mt5fleet.proto.runtime.tasks import within
from mt5fleet.proto.v1 import execution_pb2
from mt5fleet.proto.validation import ValidationError, check_execution, decode
from mt5fleet.workers.adapters.metrics import LATENCY_BUCKETS

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
    def __init__(self, nc: Any, *, metrics: FeedbackMetrics | None = None, now_ms: Any = None) -> None:
        self.js = nc.jetstream()
        self.metrics = metrics or FeedbackMetrics()
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self._stop = asyncio.Event()

    async def run(self) -> None:
        # Binding does not check that the consumer exists, and fetching from a missing one
        # fails like a reconnect, which the loop rides out: without this check a worker
        # started before the bootstrap would count nothing, forever, and look healthy.
        await self.js.consumer_info(subjects.EXECUTIONS_STREAM, subjects.EXECUTIONS_CONSUMER)
        subscription = await self.js.pull_subscribe_bind(durable=subjects.EXECUTIONS_CONSUMER,
                                                         stream=subjects.EXECUTIONS_STREAM)
        try:
            while not self._stop.is_set():
                try:
                    messages = await subscription.fetch(64, timeout=1)
                except TimeoutError:
                    continue
                except Exception as exc:  # NATS reconnecting: the durable consumer keeps our place
                    log.debug("fetching execution reports: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                for message in messages:
                    self.handle(message.data)
                    await message.ack()
        finally:
            await within(subscription.unsubscribe(), timeout=2)

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

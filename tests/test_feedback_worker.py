"""Execution feedback against a real nats-server: slippage and each latency leg as
histograms; a bad report is counted and the next good one still counts."""

from __future__ import annotations

import asyncio

import nats
from prometheus_client import generate_latest
from waiting import wait_for

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.v1 import commands_pb2, execution_pb2
from mt5fleet.workers.app.feedback_service import FeedbackWorker

NOW = 1_795_014_000_000


async def test_reports_become_slippage_and_latency_histograms(fresh_nats_server):
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    report = execution_pb2.ExecutionReport(
        command_id="c1", user_id="alice", status=execution_pb2.EXECUTION_STATUS_FILLED, retcode=10009, ticket=7,
        fill_price=1.10012, filled_volume=0.2, slippage_points=2.0, slippage_reference_points=12.0,
        signal_created_at=NOW - 900, command_created_at=NOW - 800, received_at=NOW - 750, executed_at=NOW - 700,
        symbol="EURUSD", command_type=commands_pb2.OPEN_POSITION, order_type=commands_pb2.BUY, signal_id="s1")
    subject = subjects.user_subject("alice", subjects.Channel.EXECUTIONS)
    await js.publish(subject, b"\x01broken")
    await js.publish(subject, report.SerializeToString())
    worker = FeedbackWorker(client, now_ms=lambda: NOW)
    task = asyncio.create_task(worker.run())
    filled = worker.metrics.executions.labels("filled", "")
    await wait_for(lambda: filled._value.get() == 1, "the filled report counted")
    worker.stop()
    await task
    m = worker.metrics
    assert m.invalid._value.get() == 1
    assert m.slippage.labels("reference")._sum.get() == 12.0
    exposition = generate_latest(m.registry).decode()  # what Prometheus scrapes: averages need the net sum
    assert 'mt5fleet_fleet_slippage_points_net{against="reference"} 12.0' in exposition
    assert abs(m.latency.labels("signal_to_worker")._sum.get() - 0.1) < 1e-9
    assert abs(m.latency.labels("worker_to_agent")._sum.get() - 0.05) < 1e-9
    assert abs(m.latency.labels("agent_to_fill")._sum.get() - 0.05) < 1e-9
    assert abs(m.latency.labels("signal_to_fill")._sum.get() - 0.2) < 1e-9
    info = await js.consumer_info(subjects.EXECUTIONS_STREAM, subjects.EXECUTIONS_CONSUMER)
    assert info.num_ack_pending == 0 and info.num_pending == 0  # both acknowledged, nothing left behind
    await client.close()

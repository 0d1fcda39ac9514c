"""`mt5fleet worker adjust|marketdata|feedback|health|catchup` as Kubernetes runs them: probes and
real Prometheus metrics answer, each worker turns real input into its output, SIGTERM
exits 0 within seconds (adjust hands its partitions over at once), a worker started before
the bootstrap creates what it needs from the layout, and a worker whose work fails stops
with the cause."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import nats
import pytest
from factories import execution, heartbeat
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from waiting import eventually

from mt5fleet.client.adapters.catchup import CatchupFailed, catch_up
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.natsconn import NatsSettings
from mt5fleet.proto.v1 import market_data_pb2
from mt5fleet.proto.validation import check_market_data
from mt5fleet.workers.app.runner import Service, WorkerOptions, run_worker

WEDNESDAY = 1_795_014_000_000  # 10:00 New York: the FX market is open


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, response.read().decode()


async def test_adjust_worker_process_probes_metrics_and_sigterm(fresh_nats_server):
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "mt5fleet.launcher.cli", "worker", "adjust", "--server",
                                fresh_nats_server.url, "--http-host", "127.0.0.1", "--http-port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        await eventually(lambda: _get(f"http://127.0.0.1:{port}/metrics")[1], "every partition owned",
                         until=lambda metrics: "mt5fleet_worker_partitions_owned 8.0" in metrics,
                         retry_on=(OSError,), interval=0.05)  # OSError: not listening yet
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    kv = await js.key_value(subjects.LEASES_BUCKET)
    for partition in range(subjects.ADJUST_PARTITIONS):
        lease = json.loads((await kv.get(subjects.lease_key(partition))).value)
        assert lease["expires_ms"] <= _now_ms()  # handed over at once, not after the ttl
    await client.close()


def _now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------ marketdata, feedback, health

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class WorkerProcess:
    """``mt5fleet worker <kind>`` as a subprocess, with its HTTP endpoints."""

    def __init__(self, kind: str, server_url: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mt5fleet.launcher.cli", "worker", kind, "--server", server_url,
             "--http-host", "127.0.0.1", "--http-port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})

    def get(self, path: str) -> tuple[int, str]:
        return _get(f"http://127.0.0.1:{self.port}{path}")

    def samples(self) -> Samples:
        """Every sample of /metrics, parsed as Prometheus parses the exposition."""
        families = text_string_to_metric_families(self.get("/metrics")[1])
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}

    async def wait_for(self, condition: Callable[[Samples], bool], what: str, timeout_s: float = 15.0) -> Samples:
        """The first /metrics samples ``condition`` accepts; fails at once if the worker exits."""
        def alive_samples() -> Samples:
            assert self.process.poll() is None, self.process.communicate()[0]
            return self.samples()
        return await eventually(alive_samples, what, timeout_s, until=condition, retry_on=(OSError,),
                                interval=0.05)  # OSError: not listening yet

    def assert_probes(self) -> None:
        assert self.get("/healthz")[0] == 200
        status, body = self.get("/readyz")
        assert status == 200 and json.loads(body) == {"ready": True, "nats": True, "failing": {}}, body

    def terminate(self) -> str:
        """SIGTERM; the worker must exit 0 within a few seconds. Returns its output."""
        self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=5)
        assert self.process.returncode == 0, output
        return output

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def _bootstrapped(url: str):
    client = await nats.connect(url)
    await bootstrap.bootstrap(client.jetstream(), subjects.build_layout())
    return client


async def test_marketdata_worker_process_publishes_the_simulated_feed(fresh_nats_server):
    client = await _bootstrapped(fresh_nats_server.url)
    js = client.jetstream()
    # The simulated feed is silent while the market is closed: start its clock on a Wednesday.
    worker = WorkerProcess("marketdata", fresh_nats_server.url, "--feed", "simulated", "--symbols", "EURUSD,GBPUSD",
                           env={"MT5FLEET_SIM_START_MS": str(WEDNESDAY)})
    try:
        samples = await worker.wait_for(
            lambda s: (_value(s, "mt5fleet_marketdata_published_total", kind="market_data") or 0) >= 2,
            "market data published")
        assert _value(samples, "mt5fleet_marketdata_ticks_total") >= 2
        worker.assert_probes()
        feed = ReferenceFeed(seed=1)
        for symbol in ("EURUSD", "GBPUSD"):
            stored = await js.get_msg(subjects.MARKET_DATA_STREAM, subject=subjects.market_data_subject(symbol),
                                      direct=True)
            message = market_data_pb2.ClientMarketData.FromString(stored.data)
            data = check_market_data(message, message.timestamp)
            assert data.symbol == symbol
            # Stamped with the feed's clock, priced by the seeded reference feed at that time.
            assert WEDNESDAY <= message.timestamp < WEDNESDAY + 60_000
            recent = {feed.quote(symbol, t) for t in range(message.timestamp - 2_000, message.timestamp + 1, 50)}
            assert (message.bid, message.ask) in recent
        worker.terminate()
    finally:
        worker.kill()
        await client.close()


def test_marketdata_worker_refuses_to_start_without_a_feed(fresh_nats_server):
    # A deployment that forgot its feed must not publish simulated prices as market data.
    worker = WorkerProcess("marketdata", fresh_nats_server.url, "--symbols", "EURUSD")
    try:
        output, _ = worker.process.communicate(timeout=15)
    finally:
        worker.kill()
    assert worker.process.returncode != 0
    assert "needs a reference feed" in output, output
    for option in ("--feed oanda", "--oanda-account", "$OANDA_TOKEN", "--feed simulated"):
        assert option in output, output


async def test_feedback_worker_process_turns_a_report_into_metrics(fresh_nats_server):
    client = await _bootstrapped(fresh_nats_server.url)
    worker = WorkerProcess("feedback", fresh_nats_server.url)
    try:
        await worker.wait_for(lambda s: _value(s, "mt5fleet_fleet_invalid_reports_total") == 0, "the metrics")
        worker.assert_probes()
        now = _now_ms()
        report = execution(received_at=now - 400, executed_at=now - 300, command_created_at=now - 500,
                           signal_created_at=now - 1_000, slippage_points=2.0, slippage_reference_points=14.0)
        await client.jetstream().publish(subjects.user_subject("alice", subjects.Channel.EXECUTIONS),
                                         report.SerializeToString())
        samples = await worker.wait_for(
            lambda s: _value(s, "mt5fleet_fleet_executions_total", status="filled", reason="") == 1, "the report")
        # 14 points worse than the reference lands in the (10, 20] bucket. The client library
        # leaves _sum out of histograms with negative buckets: the net gauge carries it.
        assert _value(samples, "mt5fleet_fleet_slippage_points_count", against="reference") == 1
        assert _value(samples, "mt5fleet_fleet_slippage_points_net", against="reference") == 14.0
        assert _value(samples, "mt5fleet_fleet_slippage_points_bucket", against="reference", le="10.0") == 0
        assert _value(samples, "mt5fleet_fleet_slippage_points_bucket", against="reference", le="20.0") == 1
        assert _value(samples, "mt5fleet_fleet_latency_seconds_sum", leg="agent_to_fill") == 0.1
        assert _value(samples, "mt5fleet_fleet_latency_seconds_sum", leg="signal_to_fill") == 0.7
        worker.terminate()
    finally:
        worker.kill()
        await client.close()


async def test_health_worker_process_exports_each_agents_heartbeat(fresh_nats_server):
    client = await _bootstrapped(fresh_nats_server.url)
    worker = WorkerProcess("health", fresh_nats_server.url)
    try:
        await worker.wait_for(lambda s: _value(s, "mt5fleet_fleet_invalid_heartbeats") == 0, "the metrics")
        worker.assert_probes()
        beat = heartbeat(user_id="bob", timestamp=_now_ms(), outbox_depth=4, last_command_latency_ms=87.5)
        await client.jetstream().publish(subjects.user_subject("bob", subjects.Channel.HEARTBEAT),
                                         beat.SerializeToString())
        samples = await worker.wait_for(
            lambda s: _value(s, "mt5fleet_fleet_agent_connected", user_id="bob") == 1, "bob's heartbeat")
        assert _value(samples, "mt5fleet_fleet_outbox_depth", user_id="bob") == 4
        assert _value(samples, "mt5fleet_fleet_command_latency_ms", user_id="bob") == 87.5
        assert 0 <= _value(samples, "mt5fleet_fleet_heartbeat_age_seconds", user_id="bob") < 15
        worker.terminate()
    finally:
        worker.kill()
        await client.close()


async def test_catchup_worker_process_answers_an_agents_catch_up(fresh_nats_server):
    client = await _bootstrapped(fresh_nats_server.url)
    agent = await nats.connect(fresh_nats_server.url, inbox_prefix=subjects.inbox_prefix("bob"))
    worker = WorkerProcess("catchup", fresh_nats_server.url)
    try:
        await worker.wait_for(lambda s: _value(s, "mt5fleet_catchup_commands_served_total") == 0, "the metrics")
        worker.assert_probes()
        await client.jetstream().publish(subjects.user_subject("bob", subjects.Channel.COMMANDS), b"bob-command")
        caught: list[bytes] = []
        read = await eventually(lambda: catch_up(agent, "bob", 0, caught.append), "a catch-up answered",
                                retry_on=(CatchupFailed,))  # no responders until it subscribed
        assert read == 1 and caught[-1] == b"bob-command"
        await worker.wait_for(lambda s: _value(s, "mt5fleet_catchup_commands_served_total") == 1, "served")
        worker.terminate()
    finally:
        worker.kill()
        await agent.close()
        await client.close()


async def test_a_feedback_worker_started_before_the_bootstrap_creates_its_consumer(fresh_nats_server, tmp_path):
    # No bootstrap: the worker creates TC_EXECUTIONS and its durable consumer from the layout
    # it was given, the same TOML as `mt5fleet nats bootstrap --config` takes.
    layout = tmp_path / "jetstream.toml"
    layout.write_text("[streams.TC_EXECUTIONS]\nmax_age_s = 86400\n")
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream()
    worker = WorkerProcess("feedback", fresh_nats_server.url, "--jetstream-config", str(layout))
    try:
        await eventually(lambda: js.consumer_info(subjects.EXECUTIONS_STREAM, subjects.EXECUTIONS_CONSUMER),
                         "the consumer created by the worker", retry_on=(NotFoundError,))
        assert (await js.stream_info(subjects.EXECUTIONS_STREAM)).config.max_age == 86400
        now = _now_ms()
        report = execution(received_at=now - 400, executed_at=now - 300, command_created_at=now - 500,
                           signal_created_at=now - 1_000)
        await js.publish(subjects.user_subject("alice", subjects.Channel.EXECUTIONS), report.SerializeToString())
        await worker.wait_for(lambda s: _value(s, "mt5fleet_fleet_executions_total", status="filled", reason="") == 1,
                              "the report counted")
        worker.assert_probes()
        worker.terminate()
    finally:
        worker.kill()
        await client.close()


async def test_a_worker_whose_work_fails_stops_with_the_cause(fresh_nats_server):
    # Kubernetes restarts a worker whose work ended by itself: it must not linger looking healthy.
    async def broken(options: WorkerOptions, nc: object) -> Service:
        async def run() -> None:
            raise RuntimeError("the reference feed broke")

        async def stop() -> None:
            pass
        return Service(CollectorRegistry(), run, stop)
    options = WorkerOptions(kind="marketdata", nats=NatsSettings(servers=(fresh_nats_server.url,)),
                            http_host="127.0.0.1", http_port=_free_port())
    with pytest.raises(RuntimeError, match="the reference feed broke"):
        await asyncio.wait_for(run_worker(options, build=broken), 15)

"""The fault suite's platform and its bookkeeping (tests/test_faults_*.py).

* :class:`ClusterDemo`: the demo's whole platform (operator in local mode, adjustment-worker
  pool, market-data/feedback/health/catch-up workers, real agents on simulated terminals, the
  signal engine) on a 3-node NATS cluster with R3 streams instead of one server.
* :func:`read_ledger` / :meth:`Ledger.check`: what JetStream stored, read back after a fault,
  and the proof that nothing was lost or stored twice: every stored signal has exactly one
  decision record per served user, every command a record carries is stored exactly once,
  and (with ``reports``) every command has exactly one execution report.
* ``python tests/fault_kit.py adjust ...``: one adjustment-worker replica as an OS process of
  its own (``AdjustWorker``, as ``mt5fleet worker adjust`` runs it), on a clock shifted to a
  weekday market morning so that a run on a Saturday is not a run with the market closed.

A helper, not a test module: only the fault tests import it (``from fault_kit import ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal as signals
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import ServiceUnavailableError
from waiting import eventually

from mt5fleet.launcher.demo.platform import Demo, watch_traffic
from mt5fleet.launcher.demo.services import connect, write_secret_file
from mt5fleet.launcher.demo.view import Endpoint
from mt5fleet.operator.adapters.nats_accounts import create_trust_chain, write_creds
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap, natsconn, tlsgen
from mt5fleet.proto.runtime.embedded_cluster import EmbeddedCluster
from mt5fleet.proto.runtime.embedded_nats import TlsFiles
from mt5fleet.proto.runtime.natsconn import NatsSettings
from mt5fleet.proto.v1 import commands_pb2, decision_pb2, execution_pb2, signals_pb2
from mt5fleet.workers.adapters import decision_store

R3 = subjects.build_layout({"replicas": 3})   # what `mt5fleet nats bootstrap --replicas 3` applies
DUPLICATE = execution_pb2.EXECUTION_STATUS_DUPLICATE
FILLED = (execution_pb2.EXECUTION_STATUS_FILLED, execution_pb2.EXECUTION_STATUS_PARTIAL)
LATE = ("signal_too_old", "expired_signal")   # workers.core.policy.SkipReason values
UNAVAILABLE = (ServiceUnavailableError, NatsTimeout)  # a JetStream request during a leader election


# ---------------------------------------------------------------------- the ledger
@dataclass
class Ledger:
    """Everything the platform stored for the signals of a run."""
    signals: list[signals_pb2.UniversalSignal] = field(default_factory=list)
    records: list[decision_pb2.DecisionRecord] = field(default_factory=list)
    commands: list[commands_pb2.TradingCommand] = field(default_factory=list)
    reports: list[execution_pb2.ExecutionReport] = field(default_factory=list)

    @property
    def recorded_commands(self) -> dict[str, commands_pb2.TradingCommand]:
        """command id -> the command, as the decision records carry them."""
        return {c.command_id: c for r in self.records for c in r.commands}

    def check(self, users: Iterable[str], *, reports: bool = True) -> dict[str, int]:
        """Asserts nothing was lost or stored twice; returns the counts (for the report)."""
        users = set(users)
        signal_ids = Counter(s.signal_id for s in self.signals)
        assert all(n == 1 for n in signal_ids.values()), f"a signal stored twice: {signal_ids.most_common(3)}"
        decided = Counter((r.signal_id, r.user_id) for r in self.records)
        twice = [key for key, n in decided.items() if n > 1]
        assert not twice, f"(signal, user) decided more than once: {twice[:5]}"
        missing = [(s, u) for s in signal_ids for u in users if (s, u) not in decided]
        assert not missing, f"{len(missing)} (signal, user) never decided, e.g. {missing[:5]}"
        recorded = self.recorded_commands
        stored = Counter(c.command_id for c in self.commands)
        assert not [c for c, n in stored.items() if n > 1], \
            f"commands stored twice: {[c for c, n in stored.items() if n > 1][:5]}"
        assert set(stored) == set(recorded), (
            f"commands lost: {sorted(set(recorded) - set(stored))[:5]}; "
            f"stored without a record: {sorted(set(stored) - set(recorded))[:5]}")
        per_user_signal = Counter((c.signal_id, c.user_id) for c in self.commands)
        assert all(n == 1 for n in per_user_signal.values()), "a user got two commands for one signal"
        counts = {"signals": len(signal_ids), "decisions": len(self.records), "commands": len(stored)}
        if reports:
            answered = Counter(r.command_id for r in self.reports)
            assert not [r for r in self.reports if r.status == DUPLICATE], "a command reached an agent twice"
            assert not [c for c, n in answered.items() if n > 1], \
                f"reports stored twice: {[c for c, n in answered.items() if n > 1][:5]}"
            assert set(answered) == set(stored), f"commands without a report: {sorted(set(stored) - set(answered))[:5]}"
            counts["reports"] = len(answered)
        return counts


    def complete(self, users: Iterable[str]) -> bool:
        """Every stored signal decided for every user, every recorded command stored and answered."""
        decided = {(r.signal_id, r.user_id) for r in self.records}
        stored = {c.command_id for c in self.commands}
        return all((s.signal_id, u) in decided for s in self.signals for u in users) \
            and set(self.recorded_commands) <= stored <= {r.command_id for r in self.reports}

    def too_late(self) -> list[str]:
        """(signal, user) the workers decided only once the signal was too old or expired: a
        signal delayed by the platform past its life is a trade lost. One line each."""
        created = {s.signal_id: s.created_at for s in self.signals}
        return [f"{r.user_id}: {r.signal_id} decided {r.decided_at - created.get(r.signal_id, 0)} ms after it was "
                f"made ({r.skip_reason}, replica {r.worker_replica})"
                for r in self.records if r.skip_reason in LATE]

    def unclosable(self, margin_ms: int = 3_000) -> list[str]:
        """Close signals skipped as ``no_position`` for a user whose open of the target signal
        had filled ``margin_ms`` before the close was decided (time enough for the fill's report
        to reach the workers): a position the platform forgot, left open. One line each."""
        filled = {}
        by_command = {c.command_id: c for c in self.commands}
        for report in self.reports:
            command = by_command.get(report.command_id)
            if command is not None and command.type == commands_pb2.OPEN_POSITION and report.status in FILLED:
                filled[(command.signal_id, command.user_id)] = report.executed_at
        closes = {s.signal_id: s.target_signal_id for s in self.signals if s.action == commands_pb2.CLOSE_POSITION}
        forgotten = []
        for record in self.records:
            target = closes.get(record.signal_id)
            fill = filled.get((target, record.user_id))
            if record.skip_reason == "no_position" and fill is not None and fill + margin_ms < record.decided_at:
                forgotten.append(f"{record.user_id}: {record.signal_id} (close of {target}, filled "
                                 f"{record.decided_at - fill} ms before; replica {record.worker_replica})")
        return forgotten


async def read_ledger(js: Any, *, reports: bool = True) -> Ledger:
    """Every signal, decision record, command (and execution report) the streams hold."""
    async def read(stream: str, subject: str, message: Any) -> list[Any]:
        return [message.FromString(m.data) async for m in decision_store.scan(js, stream, subject)]

    return Ledger(
        signals=await read(subjects.SIGNALS_STREAM, f"{subjects.SIGNALS_PREFIX}.*", signals_pb2.UniversalSignal),
        records=[record async for record, _ in decision_store.decisions(js, f"{subjects.DECISIONS_PREFIX}.>")],
        commands=await read(subjects.COMMANDS_STREAM, subjects.user_wildcard(subjects.Channel.COMMANDS),
                            commands_pb2.TradingCommand),
        reports=await read(subjects.EXECUTIONS_STREAM, subjects.user_wildcard(subjects.Channel.EXECUTIONS),
                           execution_pb2.ExecutionReport) if reports else [])


async def served_users(js: Any) -> list[str]:
    kv = await js.key_value(subjects.CONFIG_BUCKET)
    return sorted(await kv.keys())


# ---------------------------------------------------------------------- the platform on a cluster
class ClusterDemo(Demo):
    """The demo's platform with a 3-node cluster (JWT operator mode, TLS, R3 streams) in place
    of its one server; everything else is the demo's own code, connected with all three URLs."""

    def __init__(self, *args: Any, nodes: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nodes = nodes
        self.cluster: EmbeddedCluster | None = None
        self.service: NatsSettings | None = None
        self.nc: Any = None

    async def _start_nats(self, stack: AsyncExitStack) -> tuple[NatsSettings, Any]:
        self.phase(f"starting a {self.nodes}-node nats cluster (JetStream R3, JWT operator mode, TLS)")
        chain = create_trust_chain()
        bundle = tlsgen.generate(self.paths.private / "tls")
        self.cluster = EmbeddedCluster(self.nodes, name="mt5fleet-faults", root=self.paths.root / "nats",
                                       operator=chain.server_mode(),
                                       tls=TlsFiles(cert=bundle.server_cert, key=bundle.server_key))
        stack.callback(self.cluster.close)
        await asyncio.to_thread(self.cluster.start)
        self.servers = self.cluster.urls
        self.endpoints["server"] = [Endpoint(f"nats-server {n.server_name}", f"{n.monitor_url}/varz")
                                    for n in self.cluster.nodes]
        self.trust_file = write_secret_file(self.paths.private / "trust.json", chain.to_json())
        creds = write_creds(self.paths.private / "service.creds", chain.service_user)
        if getattr(chain, "worker_user", None) is not None:  # the workers' narrower user, as the demo has
            write_creds(self.paths.private / "worker.creds", chain.worker_user)
        write_creds(self.signals_creds, chain.producer_user)
        self.service = NatsSettings(servers=self.servers, creds_file=str(creds), tls_ca=str(bundle.ca_cert),
                                    reconnect_wait_s=0.2)
        self.nc = await connect(stack, self.service, "mt5fleet-faults")
        # Healthy nodes may still answer an account's first JetStream request with 503 for a moment.
        await eventually(lambda: bootstrap.bootstrap(self.nc.jetstream(timeout=10), R3), "the R3 layout applied",
                         timeout=30, retry_on=UNAVAILABLE, interval=0.2)
        await watch_traffic(self.nc, self.stats, self.feed)
        return self.service, self.nc


def connections(monitor_url: str) -> list[dict[str, Any]]:
    """The client connections a node serves (its /connz), every account."""
    with urllib.request.urlopen(f"{monitor_url}/connz?limit=10000", timeout=5) as response:
        return json.loads(response.read()).get("connections") or []


async def replicas_current(js: Any, stream: str, names: Iterable[str]) -> bool:
    """The stream has a leader and every other node of ``names`` as a current replica."""
    info = await js.stream_info(stream)
    cluster = info.cluster
    if cluster is None or not cluster.leader:
        return False
    peers = {p.name: p for p in cluster.replicas or []}
    followers = set(names) - {cluster.leader}
    return all(name in peers and peers[name].current and not peers[name].offline and not peers[name].lag
               for name in followers)


# ---------------------------------------------------------------------- a worker replica as a process
def adjust_process(servers: Iterable[str], *, offset_ms: int, replica: str, lease_ttl_ms: int,
                   folder: Path, publish_delay_ms: int = 0) -> subprocess.Popen[bytes]:
    """``python tests/fault_kit.py adjust``: one AdjustWorker replica in an OS process of its own.
    Its log goes to ``folder/<replica>.log``; what it owns and sees, to ``folder/<replica>.json``."""
    command = [sys.executable, str(Path(__file__).resolve()), "adjust", "--offset-ms", str(offset_ms),
               "--replica", replica, "--lease-ttl-ms", str(lease_ttl_ms), "--status", str(folder / f"{replica}.json"),
               "--publish-delay-ms", str(publish_delay_ms)]
    for url in servers:
        command += ["--server", url]
    with (folder / f"{replica}.log").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def replica_status(folder: Path, replica: str) -> dict[str, Any]:
    """What ``adjust_process`` last wrote: ``owned`` partitions and, per partition (a string key),
    how many users it is ``ready`` for (config, quote, symbol spec and account all known); {}
    before its first write."""
    try:
        return json.loads((folder / f"{replica}.json").read_text())
    except (OSError, ValueError):
        return {}


def shifted_clock(offset_ms: int):
    """Wall time moved by ``offset_ms``: the same instant in every process of the test."""
    def now_ms() -> int:
        return int(time.time() * 1000) + offset_ms
    return now_ms


async def _run_adjust(args: argparse.Namespace) -> None:
    from mt5fleet.workers.app.adjust_service import AdjustWorker

    nc = await natsconn.connect(NatsSettings(servers=tuple(args.server), name=f"mt5fleet-adjust-{args.replica}",
                                             reconnect_wait_s=0.2))
    worker = AdjustWorker(nc, replica_id=args.replica, lease_ttl_ms=args.lease_ttl_ms,
                          now_ms=shifted_clock(args.offset_ms))
    if args.publish_delay_ms:
        # Each batch of records or commands held up a moment: a fan-out slow enough that a kill
        # at its first output lands mid-way (a fast replica finished 500 users before it).
        publish_many, delay_s = worker.batch.publish_many, args.publish_delay_ms / 1000

        async def held_up(*a: Any, **kw: Any) -> Any:
            await asyncio.sleep(delay_s)
            return await publish_many(*a, **kw)
        worker.batch.publish_many = held_up
    await worker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signals.SIGINT, signals.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    status = Path(args.status)
    while not stop.is_set():
        state, ready = worker.state, Counter()
        for user_id in state.users():
            if state.quotes.get(user_id) and user_id in state.specs and user_id in state.accounts:
                ready[subjects.partition_of(user_id, worker.partitions)] += 1
        staging = status.with_suffix(".tmp")
        staging.write_text(json.dumps({"owned": sorted(worker.owned), "ready": ready}))
        staging.replace(status)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    await worker.stop()
    await nc.drain()


__all__ = ["R3", "UNAVAILABLE", "ClusterDemo", "Ledger", "adjust_process", "connections", "read_ledger",
           "replica_status", "replicas_current", "served_users", "shifted_clock"]


def main(argv: list[str] | None = None) -> None:
    import logging

    parser = argparse.ArgumentParser(prog="fault_kit")
    commands = parser.add_subparsers(dest="command", required=True)
    adjust = commands.add_parser("adjust")
    adjust.add_argument("--server", action="append", required=True)
    adjust.add_argument("--offset-ms", type=int, default=0)
    adjust.add_argument("--replica", required=True)
    adjust.add_argument("--lease-ttl-ms", type=int, default=10_000)
    adjust.add_argument("--status", required=True)
    adjust.add_argument("--publish-delay-ms", type=int, default=0, help="hold each batch publish up (0: never)")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_run_adjust(args))


if __name__ == "__main__":
    main()

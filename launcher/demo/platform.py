"""``mt5fleet demo``: the whole platform on one machine, in one process, and what it does.

It starts the real components and wires them as a cluster would, only closer together:

* a ``nats-server`` with JetStream in JWT operator mode behind TLS (a CA made for the run),
  bootstrapped as the trust chain's service user;
* the operator in local mode over a copy of ``examples/`` (plus generated users with
  ``--users N``), scaling an in-process pool of adjustment-worker replicas;
* the market-data, execution-feedback and fleet-health workers;
* one client agent per user with a simulated MT5 terminal of the user's broker, connecting
  with the credentials the operator issued into its bootstrap Secret;
* a signal engine publishing UniversalSignals.

Everything runs on one simulated market clock (a weekday morning in New York, real-time
speed), because the FX market is closed at weekends. Logs go to the run folder; the
terminal shows the live view (or progress lines when stdout is not a terminal) and, at the
end or on Ctrl-C/SIGTERM, a summary. Exit status 0 for a run that ends by its duration or
by Ctrl-C/SIGTERM, 1 when the platform could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mt5fleet.client.adapters.config_file import AgentSettings, parse_settings
from mt5fleet.client.adapters.status import bound_port, build_app, build_metrics_app, serve
from mt5fleet.client.app.agent import Agent
from mt5fleet.client.app.status_view import agent_status
from mt5fleet.client.sim.broker import BROKERS
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.client.sim.terminal import SimulatedMetaTrader5
from mt5fleet.launcher.demo.feed import SignalFactory, run_feed
from mt5fleet.launcher.demo.users import (
    broker_preset,
    examples_folder,
    market_clock_start,
    prepare_clients,
    read_clients,
)
from mt5fleet.launcher.demo.view import (
    DemoStats,
    Endpoint,
    UserRow,
    endpoints_text,
    progress_line,
    render,
    summary,
)
from mt5fleet.launcher.simulated_feed import SimulatedFeed
from mt5fleet.operator.adapters.appliers import AGENT_KEY_KEY, CA_KEY, CREDS_KEY, bootstrap_secret_name
from mt5fleet.operator.adapters.nats_accounts import TrustChain, create_trust_chain, write_creds
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.app import runtime
from mt5fleet.operator.app.local import LocalOperator
from mt5fleet.operator.core.models import EffectiveSymbols, TradingClient
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import AcceleratedClock, Clock, now_ms
from mt5fleet.proto.runtime import bootstrap, natsconn, tlsgen
from mt5fleet.proto.runtime import sealing as credentials
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats, TlsFiles
from mt5fleet.proto.runtime.natsconn import NatsSettings
from mt5fleet.proto.runtime.probes import probe_app
from mt5fleet.proto.runtime.tasks import cancel_and_wait
from mt5fleet.proto.v1 import commands_pb2, execution_pb2, signals_pb2
from mt5fleet.workers.app.adjust_service import AdjustWorker
from mt5fleet.workers.app.feedback_service import FeedbackWorker
from mt5fleet.workers.app.health_exporter import FleetHealth
from mt5fleet.workers.app.marketdata_service import MarketDataWorker
from mt5fleet.workers.app.runner import Service

log = logging.getLogger("mt5fleet.demo")

LOCALHOST = "127.0.0.1"
USERS_PER_WORKER = 2            # small, so that even the demo's fleet shows a pool of replicas
LEASE_TTL_MS = 3_000            # partitions balance within a few seconds


@dataclass(frozen=True)
class DemoOptions:
    users: int = 4
    duration_s: float = 45.0
    signals_per_minute: float = 20.0
    run_dir: Path | None = None
    live: bool = False               # the rich view (stdout a terminal) or plain progress lines
    progress_every_s: float = 3.0


# ---------------------------------------------------------------------- run folder, logging
@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def log_file(self) -> Path:
        return self.root / "demo.log"

    @property
    def clients(self) -> Path:
        return self.root / "clients"

    @property
    def secrets(self) -> Path:
        return self.root / "operator" / "secrets"

    @property
    def private(self) -> Path:
        folder = self.root / "private"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def agent_dir(self, user_id: str) -> Path:
        return self.root / "agents" / user_id


# nats-py upgrades a connection to TLS after connecting, so asyncio takes the stream for a
# plain one and says this at every close: noise, kept in the log but not counted.
TLS_CLOSE_NOISE = "returning true from eof_received() has no effect when using ssl"


class WarningCounter(logging.Handler):
    """Warnings and errors, summarised in the view instead of printed."""

    def __init__(self, stats: DemoStats) -> None:
        super().__init__(logging.WARNING)
        self.stats = stats

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message != TLS_CLOSE_NOISE:
            self.stats.on_warning(f"{record.name}: {message}")


def route_logging(path: Path, stats: DemoStats) -> list[logging.Handler]:
    """Every log record to the run's log file; warnings also counted for the view."""
    handlers: list[logging.Handler] = [logging.FileHandler(path), WarningCounter(stats)]
    handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return handlers


# ---------------------------------------------------------------------- components
async def _quietly(what: str, step: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> None:
    """A bounded clean-up step whose failure is logged, never raised."""
    try:
        await asyncio.wait_for(step(), timeout)
    except Exception as exc:  # TimeoutError included: the next step must run anyway
        log.warning("stopping %s: %r", what, exc)


def start_nats(stack: AsyncExitStack, paths: RunPaths, chain: TrustChain) -> EmbeddedNats:
    bundle = tlsgen.generate(paths.private / "tls")
    server = EmbeddedNats(server_name="mt5fleet-demo", store_dir=paths.root / "nats",
                          tls=TlsFiles(cert=bundle.server_cert, key=bundle.server_key),
                          operator=chain.server_mode())
    stack.callback(_stop_server, server, paths)
    server.start()
    return server


def _stop_server(server: EmbeddedNats, paths: RunPaths) -> None:
    server.stop()
    with contextlib.suppress(OSError):
        shutil.copy(server.log_path, paths.root / "nats-server.log")
    server.close()


def write_secret_file(path: Path, text: str) -> Path:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    return path


async def connect(stack: AsyncExitStack, settings: NatsSettings, name: str) -> Any:
    nc = await natsconn.connect(dataclasses.replace(settings, name=name))
    stack.push_async_callback(_quietly, f"NATS connection {name}", nc.drain, 5)
    return nc


async def serve_service(stack: AsyncExitStack, name: str, settings: NatsSettings,
                        build: Callable[[Any], Awaitable[Service]]) -> Endpoint:
    """One worker as ``mt5fleet worker`` runs it: its own connection, its work as a task,
    /metrics on a local port; stopped in the reverse order."""
    nc = await connect(stack, settings, f"mt5fleet-{name}")
    service = await build(nc)
    stack.push_async_callback(_quietly, name, service.stop)
    work = asyncio.create_task(service.run(), name=name)
    stack.push_async_callback(cancel_and_wait, [work])
    runner = await serve(probe_app(service.registry, nc), LOCALHOST, 0)
    stack.push_async_callback(runner.cleanup)
    return Endpoint(name, f"http://{LOCALHOST}:{bound_port(runner)}/metrics")


async def _forever() -> None:
    await asyncio.Event().wait()


class WorkerPool:
    """The adjustment-worker pool the operator scales (``appliers.Scaler``): in-process
    replicas, each with its own NATS connection as the service user and its own /metrics."""

    def __init__(self, settings: NatsSettings, clock: Clock, on_skip: Callable[[str, str, str], None]) -> None:
        self.settings, self.clock, self.on_skip = settings, clock, on_skip
        self.running: list[tuple[AdjustWorker, AsyncExitStack, Endpoint]] = []
        self._started = 0

    async def replicas(self) -> int | None:
        return len(self.running)

    async def scale(self, replicas: int) -> None:
        while len(self.running) < replicas:
            await self._start_one()
        while len(self.running) > replicas:
            _, stack, endpoint = self.running.pop()
            log.info("stopping %s", endpoint.name)
            await stack.aclose()

    async def close(self) -> None:
        await self.scale(0)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [endpoint for _, _, endpoint in self.running]

    @property
    def workers(self) -> list[AdjustWorker]:
        return [worker for worker, _, _ in self.running]

    async def _start_one(self) -> None:
        self._started += 1
        name = f"adjust-{self._started}"
        holder: list[AdjustWorker] = []

        async def build(nc: Any) -> Service:
            worker = AdjustWorker(nc, on_skip=self.on_skip, replica_id=f"demo-{name}",
                                          lease_ttl_ms=LEASE_TTL_MS, now_ms=lambda: now_ms(self.clock))
            await worker.start()
            holder.append(worker)
            return Service(worker.metrics.registry, _forever, worker.stop)

        stack = AsyncExitStack()
        try:
            endpoint = await serve_service(stack, f"{name} worker", self.settings, build)
        except BaseException:
            await stack.aclose()
            raise
        self.running.append((holder[0], stack, endpoint))
        log.info("started adjustment replica %s", name)


async def start_workers(stack: AsyncExitStack, settings: NatsSettings, feed: ReferenceFeed,
                        clock: Clock) -> list[Endpoint]:
    """Market data (the simulated reference feed), execution feedback and fleet health."""
    def clock_ms() -> int:
        return now_ms(clock)

    async def marketdata(nc: Any) -> Service:
        ticks = SimulatedFeed(feed, clock=clock)
        worker = MarketDataWorker(nc, ticks, now_ms=clock_ms)
        return Service(worker.metrics.registry, worker.run, ticks.close)

    async def feedback(nc: Any) -> Service:
        worker = FeedbackWorker(nc, now_ms=clock_ms)

        async def stop() -> None:
            worker.stop()
        return Service(worker.metrics.registry, worker.run, stop)

    async def health(nc: Any) -> Service:
        exporter = FleetHealth(now_ms=clock_ms)
        subscription = await exporter.follow(nc.jetstream())
        return Service(exporter.registry(), _forever, subscription.unsubscribe)

    return [await serve_service(stack, f"{name} worker", settings, build)
            for name, build in (("marketdata", marketdata), ("feedback", feedback), ("health", health))]


@dataclass
class OperatorHandle:
    local: LocalOperator
    secrets: DirectorySecretStore
    endpoint: Endpoint


async def start_operator(stack: AsyncExitStack, paths: RunPaths, settings: NatsSettings, trust_file: Path,
                         ca_file: Path, pool: WorkerPool, clock: Clock) -> OperatorHandle:
    options = runtime.OperatorOptions(
        nats=dataclasses.replace(settings, name="mt5fleet-operator"), trust_file=trust_file,
        agent_nats_urls=settings.servers, agent_ca_file=ca_file, http_host=LOCALHOST, http_port=0,
        users_per_worker=USERS_PER_WORKER)
    secrets = DirectorySecretStore(paths.secrets)
    stack.push_async_callback(_quietly, "the adjustment-worker pool", pool.close, 15)
    running = await runtime.start(options, secrets, scaler=pool, now_ms=lambda: now_ms(clock))
    stack.push_async_callback(_quietly, "the operator's connections", running.close)
    http = await runtime.serve_http(running.metrics, running.nc, LOCALHOST, 0)
    stack.push_async_callback(http.cleanup)
    local = LocalOperator(paths.clients, running.reconciler, secrets, poll_s=0.5, observe_s=2.0)
    stop = asyncio.Event()
    task = asyncio.create_task(local.run(stop), name="operator")

    async def stop_operator() -> None:
        stop.set()
        await cancel_and_wait([task], timeout=10)
    stack.push_async_callback(stop_operator)
    return OperatorHandle(local, secrets, Endpoint("operator", f"http://{LOCALHOST}:{bound_port(http)}/metrics"))


def operator_rows(handle: OperatorHandle, presets: dict[str, str]) -> list[UserRow]:
    """Tier, phase and conditions of every TradingClient, as the operator last wrote them."""
    rows = []
    for tracked in sorted(handle.local.tracked.values(), key=lambda t: t.key):
        tier, _ = handle.local.reconciler.fleet.by_key.get(tracked.key, ("?", ""))
        conditions = {c.type: c for c in tracked.status.conditions}
        compliant = conditions.get("TierCompliant")
        agent = conditions.get("AgentConnected")
        rows.append(UserRow(user_id=tracked.user_id, tier=tier, broker=presets.get(tracked.user_id, "?"),
                            phase=tracked.status.phase, compliant=compliant is None or compliant.status == "True",
                            compliance=compliant.message if compliant else "",
                            agent=agent.reason if agent else "-"))
    return rows


# ---------------------------------------------------------------------- agents
@dataclass(frozen=True)
class DemoUser:
    user_id: str
    tier: str
    preset: str
    login: int
    server: str
    password: str
    symbols: EffectiveSymbols      # what the operator granted: the agent's symbols until its config arrives


async def demo_users(clients: Iterable[TradingClient], handle: OperatorHandle) -> list[DemoUser]:
    """Each TradingClient with its broker preset, the password its Secret holds and the
    symbols the operator made effective."""
    effective = {t.user_id: t.status.effective_symbols for t in handle.local.tracked.values()}
    users = []
    for client in clients:
        spec = client.spec
        ref = spec.account.password_secret_ref
        stored = await handle.secrets.get(ref.name) or {}
        if ref.key not in stored:
            raise LookupError(f"Secret {ref.name} has no key {ref.key!r} (the MT5 password of {spec.user_id})")
        users.append(DemoUser(spec.user_id, spec.tier, broker_preset(spec.broker.server), spec.account.login,
                              spec.broker.server, stored[ref.key].decode(),
                              effective.get(spec.user_id, EffectiveSymbols())))
    return users


def agent_settings(user: DemoUser, paths: RunPaths, secrets: DirectorySecretStore,
                   servers: tuple[str, ...], seed: int) -> AgentSettings:
    """As an agent's TOML would say, with its bootstrap Secret's credentials, CA and key."""
    secret = bootstrap_secret_name(user.user_id)
    key_file = secrets.path(secret, AGENT_KEY_KEY)
    sealed = credentials.seal(user.password, credentials.load_key(key_file), login=user.login, server=user.server)
    return parse_settings({
        "user_id": user.user_id,
        "data_dir": str(paths.agent_dir(user.user_id)),
        "log_level": "INFO",
        "nats": {"servers": list(servers), "creds_file": str(secrets.path(secret, CREDS_KEY)),
                 "tls_ca": str(secrets.path(secret, CA_KEY)), "reconnect_wait_s": 0.5, "connect_timeout_s": 3},
        "mt5": {"backend": "simulated", "login": user.login, "server": user.server,
                "password": credentials.to_text(sealed), "key_file": str(key_file)},
        "simulated": {"broker": user.preset, "seed": seed},
        "symbols": {"trading": list(user.symbols.trading), "monitoring": list(user.symbols.monitoring)},
        "intervals": {"prices_s": 0.5, "account_s": 5, "heartbeat_s": 2, "symbols_refresh_s": 60},
        "metrics": {"port": 0},
        "status": {"port": 0},
        "risk": {"max_risk_per_trade_pct": 5.0},
    })


async def start_agent(stack: AsyncExitStack, user: DemoUser, settings: AgentSettings, feed: ReferenceFeed,
                      clock: AcceleratedClock, seed: int) -> Endpoint:
    """The real agent with a simulated terminal of the user's broker and account; its status
    page and /metrics on local ports."""
    broker = BROKERS[user.preset].evolve(login=user.login, password=user.password)
    terminal = SimulatedMetaTrader5(broker, feed, clock=clock.now, seed=seed)
    agent = Agent(settings, terminal, clock=clock)
    stack.push_async_callback(_quietly, f"agent {user.user_id}", agent.stop, 10)
    await agent.start()
    status = await serve(build_app(lambda: agent_status(agent), agent.metrics.registry), LOCALHOST, 0)
    stack.push_async_callback(status.cleanup)
    metrics = await serve(build_metrics_app(agent.metrics.registry), LOCALHOST, 0)
    stack.push_async_callback(metrics.cleanup)
    return Endpoint(f"agent {user.user_id}", f"http://{LOCALHOST}:{bound_port(metrics)}/metrics",
                    status=f"http://{LOCALHOST}:{bound_port(status)}/")


# ---------------------------------------------------------------------- traffic
async def watch_traffic(nc: Any, stats: DemoStats, feed: ReferenceFeed) -> None:
    """Signals, commands and execution reports as the service user sees them on NATS."""
    def digits(symbol: str) -> int:
        try:
            return feed.digits(symbol)
        except KeyError:
            return 5

    async def on_signal(message: Any) -> None:
        signal = signals_pb2.UniversalSignal.FromString(message.data)
        stats.on_signal(signal, digits(signal.symbol))

    async def on_command(message: Any) -> None:
        command = commands_pb2.TradingCommand.FromString(message.data)
        stats.on_command(command, digits(command.symbol))

    async def on_execution(message: Any) -> None:
        stats.on_execution(execution_pb2.ExecutionReport.FromString(message.data))

    await nc.subscribe(f"{subjects.SIGNALS_PREFIX}.*", cb=_guarded(on_signal))
    await nc.subscribe(subjects.user_wildcard(subjects.Channel.COMMANDS), cb=_guarded(on_command))
    await nc.subscribe(subjects.user_wildcard(subjects.Channel.EXECUTIONS), cb=_guarded(on_execution))


def _guarded(callback: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    async def guarded(message: Any) -> None:
        try:
            await callback(message)
        except Exception as exc:  # an unreadable message costs only itself
            log.warning("demo view skipped a message on %s: %s", message.subject, exc)
    return guarded


# ---------------------------------------------------------------------- readiness
async def wait_until(predicate: Callable[[], bool], what: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            log.warning("gave up waiting for %s after %.0f s", what, timeout)
            return False
        await asyncio.sleep(0.1)
    return True


def workers_see_everyone(pool: WorkerPool, users: Iterable[str]) -> bool:
    """Every replica holds every user's config, quotes, symbol specs and account, and the
    partitions are shared out."""
    workers, users = pool.workers, list(users)
    if not workers or sum(len(w.owned) for w in workers) < subjects.ADJUST_PARTITIONS:
        return False
    if any(not w.owned for w in workers[: subjects.ADJUST_PARTITIONS]):
        return False
    return all(u in w.state.policies and w.state.quotes.get(u) and u in w.state.specs and u in w.state.accounts
               for w in workers for u in users)


# ---------------------------------------------------------------------- the run
class Demo:
    def __init__(self, options: DemoOptions, paths: RunPaths, stats: DemoStats) -> None:
        self.options, self.paths, self.stats = options, paths, stats
        self.clock = AcceleratedClock(market_clock_start(dt.datetime.now(dt.UTC)), 1.0)
        self.feed = ReferenceFeed(seed=1)
        self.stop = asyncio.Event()
        self.users: list[DemoUser] = []
        self.endpoints: dict[str, list[Endpoint]] = {}
        self.operator: OperatorHandle | None = None
        self.pool: WorkerPool | None = None
        self.servers: tuple[str, ...] = ()
        self.trust_file = paths.private / "trust.json"
        self._started = time.monotonic()
        self._running_since = 0.0

    def phase(self, text: str) -> None:
        self.stats.phase = text
        log.info("demo: %s", text)

    def tick(self) -> None:
        """Refresh what the view shows besides NATS traffic."""
        self.stats.elapsed_s = time.monotonic() - self._started
        if self._running_since and self.stats.phase == "running":
            self.stats.running_s = time.monotonic() - self._running_since
        self.stats.market_ms = now_ms(self.clock)
        if self.operator is not None:
            self.stats.operator = operator_rows(self.operator, {u.user_id: u.preset for u in self.users})
        pool = self.pool.endpoints if self.pool else []
        fixed = self.endpoints
        self.stats.endpoints = [*fixed.get("server", []), *fixed.get("operator", []), *pool,
                                *fixed.get("workers", []), *fixed.get("agents", [])]

    async def run(self, stack: AsyncExitStack) -> None:
        """Start everything (each part registers its own clean-up in ``stack``), then run
        the signal feed for the duration or until stopped."""
        service, nc = await self._start_nats(stack)
        clients = await self._start_operator(stack, service)
        self.phase("starting the market-data, feedback and health workers")
        self.endpoints["workers"] = await start_workers(stack, service, self.feed, self.clock)
        await self._start_agents(stack, clients)
        self.tick()
        (self.paths.root / "endpoints.txt").write_text(endpoints_text(self.stats.endpoints))
        await self._run_signals(stack, nc)

    async def _start_nats(self, stack: AsyncExitStack) -> tuple[NatsSettings, Any]:
        """The server, the service user's settings, and the demo's own connection (the
        signal feed's, and the view's subscriptions) with the fleet's streams bootstrapped."""
        self.phase("starting nats-server (JetStream, JWT operator mode, TLS)")
        chain = create_trust_chain()
        server = start_nats(stack, self.paths, chain)
        self.servers = (server.url,)
        self.endpoints["server"] = [Endpoint("nats-server (monitoring JSON)", f"{server.monitor_url}/varz")]
        self.trust_file = write_secret_file(self.paths.private / "trust.json", chain.to_json())
        creds = write_creds(self.paths.private / "service.creds", chain.service_user)
        service = NatsSettings(servers=self.servers, creds_file=str(creds),
                               tls_ca=str(self.paths.private / "tls" / "ca.pem"))
        nc = await connect(stack, service, "mt5fleet-demo")
        await bootstrap.bootstrap(nc.jetstream(), subjects.build_layout())
        await watch_traffic(nc, self.stats, self.feed)
        return service, nc

    async def _start_operator(self, stack: AsyncExitStack, service: NatsSettings) -> list[TradingClient]:
        """The operator over the run's TradingClients, until it has provisioned them all."""
        self.phase("starting the operator (local mode) and the adjustment-worker pool")
        prepare_clients(self.paths.clients, self.options.users, examples_folder())
        self.pool = WorkerPool(service, self.clock, self.stats.on_skip)
        self.operator = await start_operator(stack, self.paths, service, self.trust_file, Path(service.tls_ca),
                                             self.pool, self.clock)
        self.endpoints["operator"] = [self.operator.endpoint]
        clients = read_clients(self.paths.clients)
        await wait_until(lambda: self._provisioned(clients), "the operator to provision every user", 30)
        return clients

    async def _start_agents(self, stack: AsyncExitStack, clients: list[TradingClient]) -> None:
        self.phase(f"starting {len(clients)} agents with simulated MT5 terminals")
        self.users = await demo_users(clients, self.operator)
        self.endpoints["agents"] = list(await asyncio.gather(
            *(self._start_agent(stack, index, user) for index, user in enumerate(self.users))))
        self.phase("waiting until the adjustment workers see every agent")
        await wait_until(lambda: workers_see_everyone(self.pool, [u.user_id for u in self.users]),
                         "the workers to see every agent's quotes, specs and account", 30)

    async def _run_signals(self, stack: AsyncExitStack, nc: Any) -> None:
        self.phase("running")
        self._running_since = time.monotonic()
        factory = SignalFactory(self.feed, run_id=os.urandom(3).hex())
        feed_task = asyncio.create_task(run_feed(nc.jetstream(), factory, self.clock,
                                                 self.options.signals_per_minute, self.stop), name="signals")
        stack.push_async_callback(cancel_and_wait, [feed_task])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.options.duration_s)
        self.stop.set()
        # The last signal's commands and reports are on their way: a moment to see them.
        await asyncio.sleep(1.5)

    def _provisioned(self, clients: list[TradingClient]) -> bool:
        tracked = {t.user_id: t for t in self.operator.local.tracked.values()}
        return all(c.spec.user_id in tracked and tracked[c.spec.user_id].provisioned for c in clients)

    async def _start_agent(self, stack: AsyncExitStack, index: int, user: DemoUser) -> Endpoint:
        settings = agent_settings(user, self.paths, self.operator.secrets, self.servers, seed=index + 1)
        return await start_agent(stack, user, settings, self.feed, self.clock, seed=index + 1)



# ---------------------------------------------------------------------- the command
async def show(demo: Demo, options: DemoOptions) -> None:
    """The live view at 4 refreshes a second, or, without a terminal, a progress line
    every few seconds and at every change of phase."""
    stats = demo.stats
    if options.live:
        from rich.console import Console
        from rich.live import Live

        with Live(render(stats), console=Console(), refresh_per_second=4, vertical_overflow="crop") as live:
            while True:
                demo.tick()
                live.update(render(stats))
                await asyncio.sleep(0.25)
    last_phase, last_print = "", 0.0
    while True:
        demo.tick()
        if stats.phase != last_phase or time.monotonic() - last_print >= options.progress_every_s:
            if stats.phase == "running" and last_phase != "running":
                print(endpoints_text(stats.endpoints), end="", flush=True)
            print(progress_line(stats), flush=True)
            last_phase, last_print = stats.phase, time.monotonic()
        await asyncio.sleep(0.25)


async def run_demo(options: DemoOptions, paths: RunPaths, stats: DemoStats) -> int:
    demo = Demo(options, paths, stats)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, demo.stop.set)
    view = asyncio.create_task(show(demo, options), name="view")
    failure: BaseException | None = None
    async with AsyncExitStack() as stack:
        work = asyncio.create_task(demo.run(stack), name="demo")
        stopping = asyncio.create_task(demo.stop.wait())
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done() and stats.phase != "running":  # stopped while starting: no need to finish
            log.info("stopped while starting")
            await cancel_and_wait([work], timeout=15)
        await asyncio.wait({work}, timeout=10)
        await cancel_and_wait([work, stopping])
        if work.done() and not work.cancelled() and work.exception() is not None:
            failure = work.exception()
            log.error("the demo failed", exc_info=failure)
        demo.phase("stopping (agents, workers, operator, nats-server)")
    demo.phase("stopped")
    demo.tick()
    await cancel_and_wait([view])
    print(summary(stats, [u.user_id for u in demo.users] or [row.user_id for row in stats.operator]), flush=True)
    if failure is not None:
        from mt5fleet.proto.runtime.errors import describe

        print(f"mt5fleet demo: error: {describe(failure)} (details in {paths.log_file})", file=sys.stderr)
        return 1
    return 0


def options_from(args: argparse.Namespace) -> DemoOptions:
    if args.users < 1:
        raise ValueError("--users must be at least 1")
    if args.duration <= 0 or args.signals_per_minute <= 0:
        raise ValueError("--duration and --signals-per-minute must be positive")
    return DemoOptions(users=args.users, duration_s=args.duration, signals_per_minute=args.signals_per_minute,
                       run_dir=args.run_dir, live=sys.stdout.isatty())


def run_folder(chosen: Path | None) -> Path:
    """A new temporary folder, or ``chosen`` if it is empty (or does not exist yet)."""
    if chosen is None:
        return Path(tempfile.mkdtemp(prefix="mt5fleet-demo-"))
    if chosen.exists() and any(chosen.iterdir()):
        raise ValueError(f"--run-dir {chosen} is not empty: give a new or empty folder")
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen.resolve()


def main(args: argparse.Namespace) -> int:
    options = options_from(args)
    paths = RunPaths(run_folder(options.run_dir))
    stats = DemoStats(users=options.users, duration_s=options.duration_s,
                      signals_per_minute=options.signals_per_minute, log_file=str(paths.log_file),
                      run_dir=str(paths.root))
    handlers = route_logging(paths.log_file, stats)
    try:
        return asyncio.run(run_demo(options, paths, stats))
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()

"""``mt5fleet demo``: the whole platform on one machine, in one process, and what it does.

It starts the real components and wires them as a cluster would, only closer together:

* a ``nats-server`` with JetStream in JWT operator mode behind TLS (a CA made for the run),
  bootstrapped as the trust chain's service user;
* the operator in local mode over a copy of ``examples/`` (plus generated users with
  ``--users N``), scaling an in-process pool of adjustment-worker replicas;
* the market-data, execution-feedback and fleet-health workers;
* one client agent per user with a simulated MT5 terminal of the user's broker, connecting
  with the credentials the operator issued into its bootstrap Secret;
* a signal engine publishing UniversalSignals from the signal producer's own account.

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
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mt5fleet.client.app.log_context import tag_handlers
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.launcher.demo.agents import DemoUser, agent_settings, demo_users, start_agent
from mt5fleet.launcher.demo.feed import SignalFactory, run_feed
from mt5fleet.launcher.demo.news import DEMO_WINDOW, NEWS_EVENT_IN_MS, NEWS_EVENT_TITLE, write_demo_calendar
from mt5fleet.launcher.demo.services import (
    OperatorHandle,
    RunPaths,
    WorkerPool,
    connect,
    operator_rows,
    start_calendar,
    start_nats,
    start_operator,
    start_workers,
    write_secret_file,
)
from mt5fleet.launcher.demo.users import (
    examples_folder,
    market_clock_start,
    prepare_clients,
    read_clients,
)
from mt5fleet.launcher.demo.view import (
    DemoStats,
    Endpoint,
    endpoints_text,
    market_time,
    progress_line,
    render,
    summary,
)
from mt5fleet.operator.adapters.nats_accounts import create_trust_chain, write_creds
from mt5fleet.operator.core.models import TradingClient
from mt5fleet.operator.core.tenancy import producer_inbox_prefix
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import AcceleratedClock, now_ms
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.natsconn import NatsSettings
from mt5fleet.proto.runtime.tasks import cancel_and_wait
from mt5fleet.proto.v1 import commands_pb2, execution_pb2, signals_pb2

log = logging.getLogger("mt5fleet.demo")


@dataclass(frozen=True)
class DemoOptions:
    users: int = 4
    duration_s: float = 45.0
    signals_per_minute: float = 20.0
    run_dir: Path | None = None
    live: bool = False               # the rich view (stdout a terminal) or plain progress lines
    progress_every_s: float = 3.0


# ---------------------------------------------------------------------- run folder, logging


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
    tag_handlers(handlers[0])   # lines of the agents (run here) name their user
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return handlers


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
    """The partitions are shared out, and the replica owning each user's partition holds
    that user's config, quotes, symbol specs and account."""
    workers, users = pool.workers, list(users)
    if not workers or sum(len(w.owned) for w in workers) < subjects.ADJUST_PARTITIONS:
        return False
    if any(not w.owned for w in workers[: subjects.ADJUST_PARTITIONS]):
        return False
    # A replica knows only the users of the partitions it owns (issue 15): each user is
    # checked at the replica owning its partition.
    return all(u in w.state.policies and w.state.quotes.get(u) and u in w.state.specs and u in w.state.accounts
               for w in workers for u in users if w.state.owns(u))


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
        self.calendar: Any = None   # the calendar worker's CalendarService
        self.servers: tuple[str, ...] = ()
        self.trust_file = paths.private / "trust.json"
        self.signals_creds = paths.private / "signals.creds"
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
        service, _ = await self._start_nats(stack)
        clients = await self._start_operator(stack, service)
        self.phase("starting the market-data, feedback, health and catch-up workers")
        self.endpoints["workers"] = await start_workers(stack, self.worker_settings(service), self.feed, self.clock)
        self.endpoints["workers"].append(await self._start_calendar(stack, service, clients))
        await self._start_agents(stack, clients)
        self.tick()
        (self.paths.root / "endpoints.txt").write_text(endpoints_text(self.stats.endpoints))
        await self._run_signals(stack, service)

    async def _start_calendar(self, stack: AsyncExitStack, service: NatsSettings,
                              clients: list[TradingClient]) -> Endpoint:
        """The calendar worker over a file in the weekly export's JSON format, empty until the
        run starts (``_news_at_start``)."""
        self.phase("starting the calendar worker")
        calendar_file = write_demo_calendar(self.paths.root / "calendar.json", None)
        self.stats.news_trading = {c.spec.user_id: c.spec.risk.allow_news_trading for c in clients}
        endpoint, self.calendar = await start_calendar(stack, self.worker_settings(service), calendar_file,
                                                       self.clock, DEMO_WINDOW)
        return endpoint

    async def _news_at_start(self) -> None:
        """A high-impact USD event a minute into the run: users with news trading off get
        ``news_window`` skips in its window, the others none."""
        event_ms = now_ms(self.clock) + NEWS_EVENT_IN_MS
        write_demo_calendar(self.calendar.source.path, event_ms)
        await self.calendar.refresh_once()
        self.stats.news_event = (f"USD {NEWS_EVENT_TITLE} at {market_time(event_ms)} New York (high impact), window "
                                 f"{DEMO_WINDOW.before_ms // 1000} s before to {DEMO_WINDOW.after_ms // 1000} s after")

    async def _start_nats(self, stack: AsyncExitStack) -> tuple[NatsSettings, Any]:
        """The server, the service user's settings, and the demo's own connection (the view's
        subscriptions) with the fleet's streams bootstrapped."""
        self.phase("starting nats-server (JetStream, JWT operator mode, TLS)")
        chain = create_trust_chain()
        server = start_nats(stack, self.paths, chain)
        self.servers = (server.url,)
        self.endpoints["server"] = [Endpoint("nats-server (monitoring JSON)", f"{server.monitor_url}/varz")]
        self.trust_file = write_secret_file(self.paths.private / "trust.json", chain.to_json())
        creds = write_creds(self.paths.private / "service.creds", chain.service_user)
        # The workers run as the platform's narrower worker user, as in a cluster.
        assert chain.worker_user is not None  # a chain made here has one
        write_creds(self.paths.private / "worker.creds", chain.worker_user)
        # The signal feed is a signal engine like any other: its own account, signals.* only.
        write_creds(self.signals_creds, chain.producer_user)
        service = NatsSettings(servers=self.servers, creds_file=str(creds),
                               tls_ca=str(self.paths.private / "tls" / "ca.pem"))
        nc = await connect(stack, service, "mt5fleet-demo")
        await bootstrap.bootstrap(nc.jetstream(), subjects.build_layout())
        await watch_traffic(nc, self.stats, self.feed)
        return service, nc

    def worker_settings(self, service: NatsSettings) -> NatsSettings:
        """The service connection's servers and TLS, as the workers' user."""
        return dataclasses.replace(service, creds_file=str(self.paths.private / "worker.creds"))

    async def _start_operator(self, stack: AsyncExitStack, service: NatsSettings) -> list[TradingClient]:
        """The operator over the run's TradingClients, until it has provisioned them all."""
        self.phase("starting the operator (local mode) and the adjustment-worker pool")
        prepare_clients(self.paths.clients, self.options.users, examples_folder())
        self.pool = WorkerPool(self.worker_settings(service), self.clock, self.stats.on_skip)
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

    async def _run_signals(self, stack: AsyncExitStack, service: NatsSettings) -> None:
        """The feed publishes with the signal producer's credentials, as an engine would."""
        producer = dataclasses.replace(service, creds_file=str(self.signals_creds))
        nc = await connect(stack, producer, "mt5fleet-demo-signals", inbox_prefix=producer_inbox_prefix())
        await self._news_at_start()
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

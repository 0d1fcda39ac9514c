"""The client agent: the app layer that wires terminal, stores, NATS and the loops.

Lifecycle: ``start()`` opens the stores, connects the terminal and (in the background,
retrying forever) NATS, resolves commands left in flight by a crash, then runs the
producers (prices, account, symbol specs, heartbeat), the outbox drain and the command
pipeline. ``stop()`` drains what it can and closes everything. MT5 calls run on one
thread (``Mt5Thread``); everything else on the event loop.

Who owns what: the agent owns the NATS connection, the terminal login and the tasks;
``ConfigWatch`` what is enforced now; ``AccountGuard`` the watermarks and the risk
decisions; ``Streams`` what it last read from the terminal; ``MarketDataFeed`` the server's
market data; ``CommandPipeline`` the commands. Each is handed what it needs, not the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from importlib import metadata
from typing import Any

from mt5fleet.client.adapters.execution import Executor
from mt5fleet.client.adapters.ledger import CommandLedger
from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.client.adapters.outbox import Outbox
from mt5fleet.client.adapters.publisher import Publisher
from mt5fleet.client.adapters.server_clock import ServerClock
from mt5fleet.client.adapters.settings import AgentSettings
from mt5fleet.client.adapters.terminal import Mt5Login, Terminal
from mt5fleet.client.app.account_guard import AccountGuard
from mt5fleet.client.app.catchup_runner import CatchupRunner
from mt5fleet.client.app.chart_keeper import SAVE_EVERY_S, ChartKeeper
from mt5fleet.client.app.commands import CommandPipeline
from mt5fleet.client.app.config_watch import ConfigWatch
from mt5fleet.client.app.health import HealthMonitor, Lasting, agent_facts
from mt5fleet.client.app.log_context import AGENT_USER, agent_context
from mt5fleet.client.app.loops import every
from mt5fleet.client.app.market_data import MarketDataFeed
from mt5fleet.client.app.mt5_thread import Mt5Thread
from mt5fleet.client.app.recovery import resolve_in_flight
from mt5fleet.client.app.streams import Identity, Streams
from mt5fleet.client.core.clock_skew import CorrectedClock
from mt5fleet.client.core.effective import EffectiveConfig
from mt5fleet.client.core.health import HealthBudgets
from mt5fleet.client.core.watermarks import Watermarks
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import Clock, SystemClock, now_ms
from mt5fleet.proto.domain.config import SealedCredentials
from mt5fleet.proto.runtime import natsconn
from mt5fleet.proto.runtime import sealing as credentials
from mt5fleet.proto.runtime.calendar_follow import CalendarBoard
from mt5fleet.proto.runtime.tasks import cancel_and_wait
from mt5fleet.proto.v1 import heartbeat_pb2

log = logging.getLogger("mt5fleet.agent")

# Catch-up starts this long before the connection was lost: clocks differ (a host clock up to
# a minute off, before its skew is measured, still misses nothing; the ledger dedupes the rest).
CATCHUP_MARGIN_MS = 60_000
# On a first start (or after a long absence) look back this far: commands expire sooner.
CATCHUP_WINDOW_MS = 3_600_000
# The loops that run for as long as the agent does: one that stops wedges the agent (/healthz).
FOREVER = ("nats", "outbox", "commands", "streams", "heartbeat", "health")
_STARTED = time.monotonic()


def connect_budget_s(nats: natsconn.NatsSettings) -> float:
    """The most one attempt to connect (TLS, CONNECT, subscriptions) may take before it is
    given up and made again: a few of nats-py's own per-step timeouts, at least 10 s."""
    return max(10.0, 3 * nats.connect_timeout_s)


def agent_version() -> str:
    try:
        return metadata.version("mt5fleet")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "0+unknown"


class Agent:
    def __init__(self, settings: AgentSettings, api: Any, *, clock: Clock | None = None,
                 metrics: AgentMetrics | None = None, health: HealthBudgets | None = None) -> None:
        self.settings = settings
        self.user_id = settings.user_id
        # The host's clock measures the skew against the broker's ticks; everything the agent
        # stamps or judges (expiry, sessions) uses the corrected one (core.clock_skew).
        self.host_clock = clock or SystemClock()
        server_clock = ServerClock(settings.server_time_path, now_ms=lambda: now_ms(self.host_clock))
        self.clock: Clock = CorrectedClock(self.host_clock, server_clock.skew)
        self.metrics = metrics or AgentMetrics()
        self.version = agent_version()
        self.session_id = uuid.uuid4().hex
        self.metrics.info.info({"version": self.version, "user_id": self.user_id})
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(settings.outbox_path)
        self.ledger = CommandLedger(settings.ledger_path)
        self.mt5 = Mt5Thread(f"mt5-{self.user_id}")
        self.terminal = Terminal(api, _login(settings), on_error=self._count_mt5_error, server_clock=server_clock)
        self.executor = Executor(self.terminal, default_deviation=settings.risk.max_deviation_points)
        self.publisher = Publisher(self.outbox, self.metrics, on_stored=self._on_stored)
        self.config = ConfigWatch(user_id=self.user_id, local_risk=settings.risk, local_symbols=settings.symbols,
                                  clock=self.clock, metrics=self.metrics, on_credentials=self.use_server_credentials)
        # The economic calendar, through the tenant account's read-only imports (issue 17).
        self.news = CalendarBoard(on_invalid=lambda why: self.metrics.invalid.labels("Calendar").inc())
        self.guard = AccountGuard(user_id=self.user_id, path=settings.watermarks_path, terminal=self.terminal,
                                  executor=self.executor, news=self.news)
        self.market_data = MarketDataFeed(self.metrics)
        self.pipeline = CommandPipeline(
            user_id=self.user_id, clock=self.clock, ledger=self.ledger, publisher=self.publisher,
            metrics=self.metrics, risk_gate=self._risk_gate, execute=self._execute, resolve=self._resolve_in_flight)
        self.streams = Streams(
            identity=Identity(self.user_id, self.session_id, self.version), settings=settings, clock=self.clock,
            metrics=self.metrics, mt5_thread=self.mt5, terminal=self.terminal, executor=self.executor,
            publisher=self.publisher, config=self.config, guard=self.guard, market_data=self.market_data,
            submit=self.pipeline.submit)
        # The page's charts as the last run left them (before anything samples).
        self.chart_keeper = ChartKeeper(self.streams.charts, settings.charts_path, self.metrics)
        self.chart_keeper.restore()
        self.catchup = CatchupRunner(user_id=self.user_id, connection=lambda: self.nc,
                                     submit=lambda raw: self.pipeline.submit(raw, "catchup"), metrics=self.metrics,
                                     clock=self.clock)
        lasting = Lasting()
        self.health = HealthMonitor(budgets=health or settings.health, metrics=self.metrics,
                                    facts=lambda now: agent_facts(self, now, lasting))
        self.nc: Any = None
        self.reconnects = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._lost_at_ms = 0

    @property
    def effective(self) -> EffectiveConfig:
        """What the agent enforces now (``ConfigWatch`` owns it)."""
        return self.config.effective

    @property
    def marks(self) -> Watermarks:
        """The day-start and peak equity and the stop-out (``AccountGuard`` owns them)."""
        return self.guard.marks

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Commands left in flight by a crash are settled from the terminal by the pipeline
        before any other command runs (and wait for the terminal if it is not there yet)."""
        named = AGENT_USER.set(self.user_id)   # this task's lines name the user; the caller's again after
        try:
            await self.mt5.run(self._connect_terminal)
            self.pipeline.requeue_unreported()
        finally:
            AGENT_USER.reset(named)
        self._spawn(self._stay_connected(), "nats")
        self._spawn(self.publisher.drain_forever(self._stop), "outbox")
        self._spawn(self.pipeline.run(self._stop), "commands")
        self._spawn(self.streams.run(self._stop), "streams")
        self._spawn(every(self._stop, self.settings.intervals.heartbeat_s, self.publish_heartbeat, clock=self.clock,
                          after=self.streams.show_terminal_state), "heartbeat")
        self._spawn(self.health.run(self._stop), "health")
        self._spawn(every(self._stop, SAVE_EVERY_S, self.chart_keeper.save, clock=self.clock), "charts")

    async def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        await self.catchup.stop()
        await cancel_and_wait(self._tasks)
        await self.chart_keeper.save()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                if self.nc.is_connected:
                    await asyncio.wait_for(self.publisher.drain_once(), timeout=5)
                await self.nc.drain()
        await self.mt5.run(self.terminal.shutdown)
        self.mt5.shutdown()
        self.outbox.close()
        self.ledger.close()

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task:
        task = asyncio.create_task(coroutine, name=f"{self.user_id}:{name}", context=agent_context(self.user_id))
        task.add_done_callback(_log_crash)
        self._tasks = [t for t in self._tasks if not t.done() or _name(t) in FOREVER]  # keep the list short
        self._tasks.append(task)
        return task

    def stopped_loops(self) -> tuple[str, ...]:
        """The agent's lasting loops that ended while it runs (a bug: nothing restarts them)."""
        if self._stop.is_set():
            return ()
        return tuple(_name(t) for t in self._tasks if _name(t) in FOREVER and t.done())

    def _connect_terminal(self) -> None:
        try:
            self.terminal.connect()
            self.executor.refresh_account_mode()
            self.streams.refresh_symbol_map()
        except Exception as exc:  # the loops retry: the terminal may still be starting
            log.warning("MT5 terminal not ready: %s", exc)
        self.metrics.terminal_connected.set(1 if self.terminal.connected else 0)

    # ------------------------------------------------------------------ NATS
    async def _stay_connected(self) -> None:
        """nats-py reconnects by itself, except after an error it deems final: a refused
        or revoked credential (the operator issues a new JWT on a tier change and revokes
        the old one) closes the connection for good. Then a new one is made, reading the
        credentials file again, with backoff."""
        wait = self.settings.nats.reconnect_wait_s
        while not self._stop.is_set():
            if self.nc is not None and not self.nc.is_closed:
                await asyncio.sleep(0.5)
                continue
            first = self.nc is None
            try:
                await self._connect_nats(catch_up_from=self._first_catchup_start() if first
                                         else self._lost_at_ms - CATCHUP_MARGIN_MS)
                wait = self.settings.nats.reconnect_wait_s
                if not first:
                    self.reconnects += 1
                    self.metrics.nats_reconnects.inc()
            except Exception as exc:  # server away or credentials refused: try again
                # A connection made before a later step failed (a subscription refused in a
                # server restart) would look connected here for ever, with no subscription
                # for commands and no catch-up: close it so the next attempt starts over.
                if self.nc is not None and not self.nc.is_closed:
                    with contextlib.suppress(Exception):
                        await self.nc.close()
                log.warning("NATS connection failed (%s); next attempt in %.1f s", exc, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 30.0)

    async def _connect_nats(self, catch_up_from: int) -> None:
        self.nc = await self._open_connection()
        self.metrics.nats_connected.set(1)
        self.publisher.attach(self.nc)
        self.config.attach(self.nc)
        self.market_data.attach(self.nc)
        await self.nc.subscribe(subjects.user_subject(self.user_id, subjects.Channel.COMMANDS),
                                cb=self._on_live_command)
        self._start_catch_up(catch_up_from)
        self._spawn(self.config.watch(self._stop), "config")  # md subscriptions follow once it is read
        self.news.attach()   # a new connection: subscribe on it
        self._spawn(self.news.follow(self.nc), "calendar")

    async def _open_connection(self) -> Any:
        """nats-py's connect, given up after a budget without waiting for it to end. After a
        failed TLS handshake nats-py 2.16's connect neither returns nor retries (it waits for
        ever on the broken transport's close), and in the 1,000-agent soak a cancelled attempt
        did not end either, so ``wait_for`` around it hung too: restarted agents sat
        disconnected and silent for good. An attempt given up is cancelled and left to end
        on its own; a client it might still produce is closed."""
        budget = connect_budget_s(self.settings.nats)
        attempt = asyncio.create_task(natsconn.connect(
            self.settings.nats, inbox_prefix=subjects.inbox_prefix(self.user_id),
            error_cb=self.market_data.on_server_error,
            disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected),
            name=f"{self.user_id}:nats-connect")
        try:
            done, _ = await asyncio.wait({attempt}, timeout=budget)
        finally:
            if not attempt.done():
                attempt.cancel()
                attempt.add_done_callback(_close_late_client)
        if attempt not in done:
            raise TimeoutError(f"no connection within {budget:.0f} s")
        return attempt.result()

    async def _on_live_command(self, message: Any) -> None:
        self.pipeline.submit(message.data, "live")

    async def _on_disconnected(self) -> None:
        self._lost_at_ms = now_ms(self.clock)
        self.metrics.nats_connected.set(0)
        self.config.connection_lost()
        await self.market_data.suspend()
        log.warning("NATS connection lost; reports wait in the outbox")

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        self.metrics.nats_reconnects.inc()
        self.metrics.nats_connected.set(1)
        log.info("NATS reconnected to %s", self.nc.connected_url.netloc if self.nc.connected_url else "?")
        self.publisher.wake()
        self._start_catch_up(self._lost_at_ms - CATCHUP_MARGIN_MS)  # wakes one still retrying
        self._spawn(self.config.load(self._stop), "config")  # puts missed while away
        self._spawn(self.news.load(self.nc), "calendar")

    def _first_catchup_start(self) -> int:
        """Everything still possibly unexpired: known commands are skipped by the ledger."""
        return now_ms(self.clock) - CATCHUP_WINDOW_MS

    def _start_catch_up(self, since_ms: int) -> None:
        """One catch-up at a time, retried for as long as the agent runs (``CatchupRunner``)."""
        self.catchup.start(max(since_ms, now_ms(self.clock) - CATCHUP_WINDOW_MS))

    # ------------------------------------------------------------------ heartbeat
    async def publish_heartbeat(self) -> None:
        now = now_ms(self.clock)
        quotes = self.streams.latest.values()
        beat = heartbeat_pb2.Heartbeat(
            user_id=self.user_id, agent_version=self.version, terminal_connected=self.terminal.connected,
            trade_allowed=self.terminal.connected, outbox_depth=self.outbox.depth(),
            last_publish_latency_ms=self.publisher.last_publish_latency_ms,
            last_command_latency_ms=self.pipeline.last_latency_ms, timestamp=now, session_id=self.session_id,
            uptime_s=int(time.monotonic() - _STARTED), reconnects=self.reconnects,
            # A tick stamped by the broker's clock can be a hair ahead of ours: never negative.
            price_staleness_ms=max(max((now - q.timestamp for q in quotes), default=0), 0),
            tick_rate=len(self.streams.latest) / self.settings.intervals.prices_s,
            commands_executed=self.pipeline.executed, commands_rejected=self.pipeline.rejected)
        await self.publisher.publish_now("heartbeat", subjects.user_subject(self.user_id, subjects.Channel.HEARTBEAT),
                                         f"{self.session_id}:h:{now}", beat.SerializeToString())

    # ------------------------------------------------------------------ commands
    async def _risk_gate(self, command: Any, at_ms: int) -> Any:
        return await self.mt5.run(self.guard.decide, command, at_ms, self.config.effective.limits)

    async def _execute(self, command: Any) -> Any:
        return await self.mt5.run(self.executor.execute, command)

    async def _resolve_in_flight(self) -> int:
        return await resolve_in_flight(ledger=self.ledger, pipeline=self.pipeline, executor=self.executor,
                                       mt5_thread=self.mt5, clock=self.clock)

    def _on_stored(self, kind: str, msg_id: str) -> None:
        self.pipeline.on_report_stored(kind, msg_id)

    def _count_mt5_error(self, code: int, call: str) -> None:
        self.metrics.mt5_errors.labels(str(code)).inc()
        if code <= -10000:
            self.metrics.terminal_connected.set(0)
            if self.terminal.connected:  # the first failure of a working link, not every retry
                log.warning("MT5 IPC failure %d in %s: re-initialising the terminal connection", code, call)

    # ------------------------------------------------------------------ server credentials
    def use_server_credentials(self, sealed: SealedCredentials) -> bool:
        """Log in with the MT5 password the operator sealed into ClientConfig (under this
        agent's key: the bootstrap Secret's ``agent.key``), when the local config names
        none: the password then lives in one place, the platform's Secret. A password in
        the local config always wins. Returns whether the terminal login changed."""
        if self.settings.mt5.password is not None or not sealed.ciphertext:
            return False
        try:
            key = credentials.load_key(self.settings.mt5.key_file, self.settings.mt5.key_env)
            password = credentials.unseal(credentials.from_credentials(sealed), key, login=sealed.login,
                                          server=sealed.server)
        except credentials.CredentialError as exc:
            self.metrics.invalid.labels("EncryptedCredentials").inc()
            log.warning("the server's MT5 credentials do not open with this agent's key: %s", exc)
            return False
        current = self.terminal.login
        if (current.login, current.server, current.password) == (sealed.login, sealed.server, password):
            return False
        self.terminal.login = dataclasses.replace(current, login=sealed.login, server=sealed.server,
                                                  password=password)
        log.info("MT5 login %s on %s from the server's sealed credentials", sealed.login, sealed.server)
        self._spawn(self.mt5.run(self._connect_terminal), "terminal-login")
        return True


def _login(settings: AgentSettings) -> Mt5Login:
    mt5 = settings.mt5
    return Mt5Login(login=mt5.login, password=mt5.unseal_password(), server=mt5.server,
                    path=mt5.terminal_path, timeout_ms=int(mt5.init_timeout_s * 1000))


def _name(task: asyncio.Task) -> str:
    return task.get_name().rsplit(":", 1)[-1]


def _close_late_client(attempt: asyncio.Task) -> None:
    """A connection attempt given up that connected after all: not the agent's, closed."""
    if attempt.cancelled() or attempt.exception() is not None:
        return
    late = attempt.result()
    task = asyncio.ensure_future(late.close())
    task.add_done_callback(lambda t: t.cancelled() or t.exception())   # nothing to report


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("agent task %s stopped: %r", task.get_name(), task.exception())

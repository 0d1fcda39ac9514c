"""The client agent: the app layer that wires terminal, stores, NATS and the loops.

Lifecycle: ``start()`` opens the stores, connects the terminal and (in the background,
retrying forever) NATS, resolves commands left in flight by a crash, then runs the
producers (prices, account, symbol specs, heartbeat), the outbox drain and the command
pipeline. ``stop()`` drains what it can and closes everything. MT5 calls run on one
thread; everything else on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any

from mt5fleet.client.adapters.catchup import catch_up
from mt5fleet.client.adapters.config_file import AgentSettings
from mt5fleet.client.adapters.execution import Executor
from mt5fleet.client.adapters.ledger import CommandLedger
from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.client.adapters.outbox import Outbox
from mt5fleet.client.adapters.pricebuffer import PriceBuffer
from mt5fleet.client.adapters.publisher import Publisher
from mt5fleet.client.adapters.terminal import Mt5Login, Terminal
from mt5fleet.client.app.commands import CommandPipeline
from mt5fleet.client.app.recovery import resolve_in_flight
from mt5fleet.client.app.streams import Streams
from mt5fleet.client.core import effective as effective_config
from mt5fleet.client.core import watermarks
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import Clock, SystemClock, now_ms
from mt5fleet.proto.runtime import natsconn
from mt5fleet.proto.runtime import sealing as credentials
from mt5fleet.proto.runtime.tasks import cancel_and_wait
from mt5fleet.proto.v1 import config_pb2

log = logging.getLogger("mt5fleet.agent")

# Catch-up starts this long before the connection was lost: clocks differ a little.
CATCHUP_MARGIN_MS = 30_000
# On a first start (or after a long absence) look back this far: commands expire sooner.
CATCHUP_WINDOW_MS = 3_600_000


def agent_version() -> str:
    try:
        return metadata.version("mt5fleet")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "0+unknown"


class Agent:
    def __init__(self, settings: AgentSettings, api: Any, *, clock: Clock | None = None,
                 metrics: AgentMetrics | None = None) -> None:
        self.settings = settings
        self.user_id = settings.user_id
        self.clock = clock or SystemClock()
        self.metrics = metrics or AgentMetrics()
        self.version = agent_version()
        self.session_id = uuid.uuid4().hex
        self.metrics.info.info({"version": self.version, "user_id": self.user_id})
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(settings.outbox_path)
        self.ledger = CommandLedger(settings.ledger_path)
        self.watermarks_path = settings.data_dir / "watermarks.json"
        self.marks = watermarks.load(self.watermarks_path)
        self.terminal = Terminal(api, _login(settings), on_error=self._count_mt5_error)
        self.executor = Executor(self.terminal, default_deviation=settings.risk.max_deviation_points)
        self.effective = effective_config.from_settings(settings)
        self.publisher = Publisher(self.outbox, self.metrics, on_stored=self._on_stored)
        self.pipeline = CommandPipeline(
            user_id=self.user_id, clock=self.clock, ledger=self.ledger, publisher=self.publisher,
            metrics=self.metrics, risk_gate=self._risk_gate, execute=self._execute)
        self.prices_buffer: PriceBuffer = PriceBuffer(1000)
        self.streams = Streams(self)
        self.nc: Any = None
        self.reconnects = 0
        self.market_data: dict[str, Any] = {}
        self._mt5_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mt5-{self.user_id}")
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._connected_since_ms = 0
        self._lost_at_ms = 0
        self._md_subscriptions: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.mt5(self._connect_terminal)
        await resolve_in_flight(self)
        for entry in self.ledger.unreported():  # reports whose JetStream ack never came
            if entry.report:
                self.publisher.enqueue("execution", self.pipeline._report_subject, entry.command_id, entry.report)
        self._spawn(self._stay_connected(), "nats")
        self._spawn(self.publisher.drain_forever(self._stop), "outbox")
        self._spawn(self.pipeline.run(self._stop), "commands")
        self._spawn(self.streams.run(self._stop), "streams")

    async def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        await cancel_and_wait(self._tasks)
        if self.nc is not None:
            with contextlib.suppress(Exception):
                if self.nc.is_connected:
                    await asyncio.wait_for(self.publisher.drain_once(), timeout=5)
                await self.nc.drain()
        await self.mt5(self.terminal.shutdown)
        self._mt5_thread.shutdown(wait=True)
        self.outbox.close()
        self.ledger.close()

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=f"{self.user_id}:{name}")
        task.add_done_callback(_log_crash)
        self._tasks.append(task)

    async def mt5(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._mt5_thread, function, *args)

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
                log.warning("NATS connection failed (%s); next attempt in %.1f s", exc, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 30.0)

    async def _connect_nats(self, catch_up_from: int) -> None:
        self.nc = await natsconn.connect(
            self.settings.nats, inbox_prefix=f"_INBOX_{self.user_id}",
            disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected)
        self.metrics.nats_connected.set(1)
        self._connected_since_ms = now_ms(self.clock)
        self.publisher.attach(self.nc)
        self._md_subscriptions.clear()  # they belonged to the previous connection
        await self.nc.subscribe(subjects.user_subject(self.user_id, subjects.Channel.COMMANDS),
                                cb=self._on_live_command)
        self._spawn(self._catch_up(catch_up_from), "catchup")
        self._spawn(self.streams.watch_config(self._stop), "config")
        await self.streams.resubscribe_market_data()

    async def _on_live_command(self, message: Any) -> None:
        self.pipeline.submit(message.data, "live")

    async def _on_disconnected(self) -> None:
        self._lost_at_ms = now_ms(self.clock)
        self.metrics.nats_connected.set(0)
        log.warning("NATS connection lost; reports wait in the outbox")

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        self.metrics.nats_reconnects.inc()
        self.metrics.nats_connected.set(1)
        log.info("NATS reconnected to %s", self.nc.connected_url.netloc if self.nc.connected_url else "?")
        self.publisher.wake()
        self._spawn(self._catch_up(self._lost_at_ms - CATCHUP_MARGIN_MS), "catchup")
        self._spawn(self.streams.load_config(self._stop), "config")  # puts missed while away

    def _first_catchup_start(self) -> int:
        """Everything still possibly unexpired: known commands are skipped by the ledger."""
        return now_ms(self.clock) - CATCHUP_WINDOW_MS

    async def _catch_up(self, since_ms: int) -> None:
        since_ms = max(since_ms, now_ms(self.clock) - CATCHUP_WINDOW_MS)
        for attempt in range(5):
            try:
                await catch_up(self.nc.jetstream(), self.user_id, since_ms,
                               lambda raw: self.pipeline.submit(raw, "catchup"))
                return
            except Exception as exc:  # JetStream briefly unavailable right after a restart
                log.warning("catch-up attempt %d failed: %s", attempt + 1, exc)
                await asyncio.sleep(min(2 ** attempt, 10))

    # ------------------------------------------------------------------ commands
    async def _risk_gate(self, command: Any, at_ms: int) -> Any:
        return await self.mt5(self.streams.risk_decision, command, at_ms)

    async def _execute(self, command: Any) -> Any:
        return await self.mt5(self.executor.execute, command)

    def _on_stored(self, kind: str, msg_id: str) -> None:
        self.pipeline.on_report_stored(kind, msg_id)

    def _count_mt5_error(self, code: int, call: str) -> None:
        self.metrics.mt5_errors.labels(str(code)).inc()
        if code <= -10000:
            self.metrics.terminal_connected.set(0)
            log.warning("MT5 IPC failure %d in %s: re-initialising the terminal connection", code, call)

    # ------------------------------------------------------------------ config
    def apply_config(self, new: effective_config.EffectiveConfig) -> None:
        changed_symbols = new.streamed_symbols != self.effective.streamed_symbols
        self.effective = new
        log.info("configuration applied: tier %s, trading %s", new.tier, ", ".join(new.trading_symbols))
        if changed_symbols:
            self.streams.symbols_changed.set()

    def use_server_credentials(self, sealed: config_pb2.EncryptedCredentials) -> bool:
        """Log in with the MT5 password the operator sealed into ClientConfig (under this
        agent's key: the bootstrap Secret's ``agent.key``), when the local config names
        none: the password then lives in one place, the platform's Secret. A password in
        the local config always wins. Returns whether the terminal login changed."""
        if self.settings.mt5.password is not None or not sealed.ciphertext:
            return False
        try:
            key = credentials.load_key(self.settings.mt5.key_file, self.settings.mt5.key_env)
            password = credentials.unseal(credentials.from_proto(sealed), key, login=sealed.login,
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
        self._spawn(self.mt5(self._connect_terminal), "terminal-login")
        return True

    def save_watermarks(self) -> None:
        watermarks.save(self.watermarks_path, self.marks)


def _login(settings: AgentSettings) -> Mt5Login:
    mt5 = settings.mt5
    return Mt5Login(login=mt5.login, password=mt5.unseal_password(), server=mt5.server,
                    path=mt5.terminal_path, timeout_ms=int(mt5.init_timeout_s * 1000))


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("agent task %s stopped: %r", task.get_name(), task.exception())

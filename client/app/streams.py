"""The agent's producers and watchers: prices every second, the account on change and every
minute, symbol specs on start and change, heartbeats, the live ClientConfig and the
server's market data. Terminal reads run on the agent's MT5 thread (``agent.mt5``)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from nats.js.errors import NotFoundError

from mt5fleet.client.adapters import convert
from mt5fleet.client.adapters.status import PositionRow
from mt5fleet.client.adapters.terminal import TerminalError, discover_symbol_map
from mt5fleet.client.core import effective as effective_config
from mt5fleet.client.core import mt5_constants as mt5
from mt5fleet.client.core import risk
from mt5fleet.proto import subjects
from mt5fleet.proto.domain import sessions
from mt5fleet.proto.domain.clock import now_ms
from mt5fleet.proto.domain.ids import command_id_for
from mt5fleet.proto.v1 import commands_pb2, config_pb2, heartbeat_pb2, market_data_pb2, prices_pb2, symbols_pb2
from mt5fleet.proto.validation import ValidationError, decode

if TYPE_CHECKING:
    from mt5fleet.client.app.agent import Agent

log = logging.getLogger("mt5fleet.agent.streams")


class Streams:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.symbols_changed = asyncio.Event()
        self.infos: dict[str, Any] = {}          # canonical -> SymbolInfo record
        self.latest: dict[str, prices_pb2.ClientPrice] = {}
        self._price_seq = 0
        self._account_seq = 0
        self._last_account: tuple | None = None
        self._last_account_sent = 0.0
        self._last_specs: bytes = b""
        self._dropped_seen = 0
        self.account: Any = None                 # the latest AccountInfo record
        self.position_rows: tuple[PositionRow, ...] = ()

    def _subject(self, channel: subjects.Channel) -> str:
        return subjects.user_subject(self.agent.user_id, channel)

    async def run(self, stop: asyncio.Event) -> None:
        intervals = self.agent.settings.intervals
        await asyncio.gather(
            self._every(stop, intervals.prices_s, self.publish_prices),
            self._every(stop, intervals.prices_s, self.check_account),  # changes show at the price cadence
            self._every(stop, intervals.symbols_refresh_s, self.publish_symbols, wake=self.symbols_changed),
            self._every(stop, intervals.heartbeat_s, self.publish_heartbeat),
        )

    async def _every(self, stop: asyncio.Event, seconds: float, action: Any, wake: asyncio.Event | None = None) -> None:
        while not stop.is_set():
            try:
                await action()
            except TerminalError as exc:
                log.debug("%s: terminal unavailable: %s", action.__name__, exc)
            except Exception:
                log.exception("%s failed", action.__name__)
            self.agent.metrics.terminal_connected.set(1 if self.agent.terminal.connected else 0)
            sleeper = asyncio.ensure_future(self.agent.clock.sleep(seconds))
            waiters = {sleeper} | ({asyncio.ensure_future(wake.wait())} if wake else set())
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if wake:
                wake.clear()

    # ------------------------------------------------------------------ symbols (MT5 thread)
    def refresh_symbol_map(self) -> symbols_pb2.SymbolSpecList:
        agent = self.agent
        wanted = agent.effective.streamed_symbols
        mapping = discover_symbol_map(wanted, agent.terminal.broker_symbols(), dict(agent.effective.symbol_overrides))
        missing = sorted(set(wanted) - set(mapping))
        if missing:
            log.warning("the broker offers no symbol for %s", ", ".join(missing))
        infos = {}
        for canonical, broker in mapping.items():
            agent.terminal.select(broker)
            info = agent.terminal.symbol_info(broker)
            if info is not None:
                infos[canonical] = info
        self.infos = infos
        agent.executor.symbol_map = {c: i.name for c, i in infos.items()}
        return symbols_pb2.SymbolSpecList(
            user_id=agent.user_id, timestamp=now_ms(agent.clock),
            specs=[convert.symbol_spec(c, i) for c, i in infos.items()])

    async def publish_symbols(self) -> None:
        specs = await self.agent.mt5(self.refresh_symbol_map)
        body = symbols_pb2.SymbolSpecList(specs=specs.specs).SerializeToString(deterministic=True)
        if body != self._last_specs:
            self._last_specs = body
            self.agent.publisher.enqueue("symbols", self._subject(subjects.Channel.SYMBOLS),
                                         f"{self.agent.session_id}:s:{specs.timestamp}", specs.SerializeToString())
        await self.resubscribe_market_data()

    # ------------------------------------------------------------------ prices
    def read_quotes(self) -> list[prices_pb2.ClientPrice]:
        server = self.agent.settings.mt5.server or ""
        quotes = []
        for canonical, info in self.infos.items():
            tick = self.agent.terminal.tick(info.name)
            if tick is not None and tick.bid > 0 and tick.ask >= tick.bid:
                quotes.append(convert.client_price(canonical, info.name, tick, info, server))
        return quotes

    async def publish_prices(self) -> None:
        agent = self.agent
        started = time.monotonic()
        quotes = await agent.mt5(self.read_quotes)
        now = now_ms(agent.clock)
        for quote in quotes:
            self.latest[quote.symbol] = quote
        agent.metrics.quotes_read.inc(len(quotes))
        agent.metrics.tick_rate.set(len(quotes) / max(agent.settings.intervals.prices_s, 1e-3))
        if self.latest:
            oldest = min(q.timestamp for q in self.latest.values())
            agent.metrics.price_staleness.set(max(now - oldest, 0) / 1000)
        if not agent.publisher.connected:
            for quote in quotes:
                agent.prices_buffer.add(quote)
            agent.metrics.price_buffer_dropped.inc(max(agent.prices_buffer.dropped - self._dropped_seen, 0))
            self._dropped_seen = agent.prices_buffer.dropped
            return
        for batch in self._backlog_batches():
            await self._send_prices(batch, now)
        if quotes:
            await self._send_prices(quotes, now)
        log.debug("prices published in %.1f ms", (time.monotonic() - started) * 1000)

    def _backlog_batches(self) -> list[list[prices_pb2.ClientPrice]]:
        """Quotes buffered while offline, oldest first, at most one per symbol per batch."""
        batches: list[list[prices_pb2.ClientPrice]] = []
        for quote in self.agent.prices_buffer.drain():
            home = next((b for b in batches if all(q.symbol != quote.symbol for q in b)), None)
            if home is None:
                batches.append(home := [])
            home.append(quote)
        return batches

    async def _send_prices(self, quotes: list[prices_pb2.ClientPrice], now: int) -> None:
        agent = self.agent
        self._price_seq += 1
        account = agent.settings.mt5
        batch = prices_pb2.ClientPriceStream(
            user_id=agent.user_id, broker_name=self._broker(), account_number=str(account.login or ""),
            prices=quotes, batch_timestamp=now, sequence=self._price_seq)
        await agent.publisher.publish_now("prices", self._subject(subjects.Channel.PRICES),
                                          f"{agent.session_id}:p:{self._price_seq}", batch.SerializeToString())

    def _broker(self) -> str:
        return self.account.company if self.account is not None else ""

    # ------------------------------------------------------------------ account
    def read_account(self) -> tuple[Any, int]:
        account = self.agent.executor.refresh_account_mode()
        positions = self.agent.terminal.positions()
        self.position_rows = tuple(_position_row(p) for p in positions)
        return account, len(positions)

    async def check_account(self) -> None:
        agent = self.agent
        account, positions = await agent.mt5(self.read_account)
        self.account = account
        now = now_ms(agent.clock)
        agent.metrics.equity.set(account.equity)
        agent.metrics.positions_open.set(positions)
        before = agent.marks
        agent.marks = agent.marks.advance(account.equity, now)
        self._guard(account, now)
        if agent.marks != before:
            agent.save_watermarks()
        fingerprint = convert.account_fingerprint(account, positions)
        due = agent.clock.now() - self._last_account_sent >= agent.settings.intervals.account_s
        if fingerprint != self._last_account or due:
            self._last_account, self._last_account_sent = fingerprint, agent.clock.now()
            self._account_seq += 1
            profile = convert.account_profile(
                agent.user_id, account, timestamp=now, open_positions=positions,
                day_start_equity=agent.marks.day_start_equity, peak_equity=agent.marks.peak_equity,
                sequence=self._account_seq)
            agent.publisher.enqueue("account", self._subject(subjects.Channel.ACCOUNT),
                                    f"{agent.session_id}:a:{self._account_seq}", profile.SerializeToString())

    def _guard(self, account: Any, now: int) -> None:
        """Daily stop-out and the weekend auto-close: the agent closes everything itself."""
        agent = self.agent
        marks = agent.marks
        state, close_now = risk.evaluate_stop_out(marks.stop_out, agent.effective.limits, account.equity,
                                                  marks.day_start_equity, marks.peak_equity, now)
        if state != marks.stop_out:
            agent.marks = marks = dataclasses.replace(marks, stop_out=state)
        if close_now:
            log.warning("stop-out: %s; closing all positions", state.reason)
            self._close_all(f"stop-out:{state.handled_day_ms}", f"stop-out: {state.reason}", now)
        if risk.should_auto_close_for_weekend(now, auto_close_friday=agent.effective.auto_close_friday,
                                              already_done_for_week=marks.weekend_done(now)):
            agent.marks = dataclasses.replace(marks, weekend_closed_at_ms=now)
            self._close_all(f"weekend:{now // 86_400_000}", "auto-close before the weekend", now)

    def _close_all(self, key: str, reason: str, now: int) -> None:
        command = commands_pb2.TradingCommand(
            command_id=command_id_for(key, self.agent.user_id, "close-all"), user_id=self.agent.user_id,
            type=commands_pb2.CLOSE_ALL, reason=reason, created_at=now, expires_at=now + 600_000)
        self.agent.pipeline.submit(command.SerializeToString(), "local")

    # ------------------------------------------------------------------ risk (MT5 thread)
    def risk_decision(self, command: Any, at_ms: int) -> risk.Decision:
        agent = self.agent
        account = agent.terminal.account_info()
        positions = agent.terminal.positions()
        view = agent.executor.view(command.symbol) if command.symbol else None
        broker = view.spec.broker_symbol if view else None
        context = risk.RiskContext(
            now_ms=at_ms, equity=account.equity, balance=account.balance,
            day_start_equity=agent.marks.day_start_equity or account.equity,
            peak_equity=max(agent.marks.peak_equity, account.equity), open_positions=len(positions),
            symbol_positions=sum(1 for p in positions if p.symbol == broker),
            bid=view.bid if view else 0.0, ask=view.ask if view else 0.0,
            spread_points=round((view.ask - view.bid) / view.spec.point) if view else 0.0,
            spec=view.spec if view else None, market=sessions.market_state(at_ms), stop_out=agent.marks.stop_out,
            netting=not agent.executor.hedging)
        return risk.check(command, agent.effective.limits, context)

    # ------------------------------------------------------------------ heartbeat
    async def publish_heartbeat(self) -> None:
        agent = self.agent
        now = now_ms(agent.clock)
        info = self.latest.values()
        beat = heartbeat_pb2.Heartbeat(
            user_id=agent.user_id, agent_version=agent.version, terminal_connected=agent.terminal.connected,
            trade_allowed=agent.terminal.connected, outbox_depth=agent.outbox.depth(),
            last_publish_latency_ms=agent.publisher.last_publish_latency_ms,
            last_command_latency_ms=agent.pipeline.last_latency_ms, timestamp=now, session_id=agent.session_id,
            uptime_s=int(time.monotonic() - _STARTED), reconnects=agent.reconnects,
            price_staleness_ms=max((now - q.timestamp for q in info), default=0),
            tick_rate=len(self.latest) / agent.settings.intervals.prices_s,
            commands_executed=agent.pipeline.executed, commands_rejected=agent.pipeline.rejected)
        await agent.publisher.publish_now("heartbeat", self._subject(subjects.Channel.HEARTBEAT),
                                          f"{agent.session_id}:h:{now}", beat.SerializeToString())

    # ------------------------------------------------------------------ server config and data
    async def watch_config(self, stop: asyncio.Event) -> None:
        """Apply every version of this user's ClientConfig as it is written: no restart.

        A plain subscription on the key's subject gets each put live; a direct get reads
        the current value at start and after every reconnect (what was put meanwhile).
        Both are what the user's NATS permissions grant: no consumer per agent."""
        agent = self.agent
        await agent.nc.subscribe(subjects.config_key_subject(agent.user_id), cb=self._on_config_message)
        await self.load_config(stop)

    async def load_config(self, stop: asyncio.Event) -> None:
        agent = self.agent
        while not stop.is_set():
            try:
                message = await agent.nc.jetstream().get_msg(
                    subjects.config_stream_name(), subject=subjects.config_key_subject(agent.user_id), direct=True)
            except NotFoundError:
                return  # no config written yet: the subscription will bring the first one
            except Exception as exc:  # the bucket not there yet, or the connection is away
                log.debug("reading the config: %s", exc)
                await asyncio.sleep(2)
                continue
            if message.data and not _kv_deleted(message.headers):
                self._apply_config(message.data)
            return

    async def _on_config_message(self, message: Any) -> None:
        if message.data and not _kv_deleted(message.headers):
            self._apply_config(message.data)

    def _apply_config(self, raw: bytes) -> None:
        agent = self.agent
        try:
            config = decode(config_pb2.ClientConfig, raw)
            if config.user_id != agent.user_id:
                raise ValidationError("ClientConfig", ())
            new = effective_config.from_client_config(config, agent.settings)
        except (ValidationError, ValueError) as exc:
            agent.metrics.invalid.labels("ClientConfig").inc()
            log.warning("refused a ClientConfig: %s", exc)
            return
        agent.apply_config(new)
        if config.HasField("mt5_credentials"):
            agent.use_server_credentials(config.mt5_credentials)

    async def resubscribe_market_data(self) -> None:
        agent = self.agent
        if agent.nc is None or not agent.nc.is_connected:
            return
        wanted = set(agent.effective.streamed_symbols)
        for symbol in set(agent._md_subscriptions) - wanted:
            await agent._md_subscriptions.pop(symbol).unsubscribe()
        for symbol in sorted(wanted - set(agent._md_subscriptions)):
            agent._md_subscriptions[symbol] = await agent.nc.subscribe(
                subjects.market_data_subject(symbol), cb=self._on_market_data)

    async def _on_market_data(self, message: Any) -> None:
        try:
            data = decode(market_data_pb2.ClientMarketData, message.data)
        except ValidationError:
            self.agent.metrics.invalid.labels("ClientMarketData").inc()
            return
        self.agent.market_data[data.symbol] = data


_STARTED = time.monotonic()


def _position_row(position: Any) -> PositionRow:
    side = "buy" if position.type == mt5.POSITION_TYPE_BUY else "sell"
    return PositionRow(position.ticket, position.symbol, side, position.volume, position.price_open, position.sl,
                       position.tp, position.profit, position.comment)



def _kv_deleted(headers: Any) -> bool:
    """A KV delete or purge: a marker message, not a config (the operator deleted the user)."""
    return bool(headers) and headers.get("KV-Operation") in ("DEL", "PURGE")

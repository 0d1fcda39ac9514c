"""The agent's producers: prices every second, the account on change and every minute,
symbol specs on start and change. Terminal reads run on the agent's MT5 thread.

``Streams`` owns what it last read from the terminal (symbols, quotes, account, positions)
and what it publishes in sequence; it is handed its collaborators and knows no ``Agent``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mt5fleet.client.adapters import convert
from mt5fleet.client.adapters.execution import Executor
from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.client.adapters.pricebuffer import PriceBuffer
from mt5fleet.client.adapters.publisher import Publisher
from mt5fleet.client.adapters.settings import AgentSettings
from mt5fleet.client.adapters.status import PositionRow
from mt5fleet.client.adapters.terminal import Terminal, discover_symbol_map
from mt5fleet.client.app.account_guard import AccountGuard
from mt5fleet.client.app.config_watch import ConfigWatch
from mt5fleet.client.app.loops import every
from mt5fleet.client.app.market_data import MarketDataFeed
from mt5fleet.client.app.mt5_thread import Mt5Thread
from mt5fleet.client.core import mt5_constants as mt5
from mt5fleet.client.core.history import ChartHistory
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import Clock, now_ms
from mt5fleet.proto.v1 import prices_pb2, symbols_pb2

log = logging.getLogger("mt5fleet.agent.streams")

PRICE_BUFFER_CAPACITY = 1000


@dataclass(frozen=True)
class Identity:
    """Who publishes: the user, and this run of the agent (message ids stay unique per run)."""

    user_id: str
    session_id: str
    version: str


class Streams:
    def __init__(self, *, identity: Identity, settings: AgentSettings, clock: Clock, metrics: AgentMetrics,
                 mt5_thread: Mt5Thread, terminal: Terminal, executor: Executor, publisher: Publisher,
                 config: ConfigWatch, guard: AccountGuard, market_data: MarketDataFeed,
                 submit: Callable[[bytes, str], None]) -> None:
        self.identity, self.settings, self.clock, self.metrics = identity, settings, clock, metrics
        self.mt5, self.terminal, self.executor, self.publisher = mt5_thread, terminal, executor, publisher
        self.config, self.guard, self.market_data, self.submit = config, guard, market_data, submit
        self.infos: dict[str, Any] = {}          # canonical -> SymbolInfo record
        self.latest: dict[str, prices_pb2.ClientPrice] = {}
        self.prices_buffer: PriceBuffer = PriceBuffer(PRICE_BUFFER_CAPACITY)
        self.account: Any = None                 # the latest AccountInfo record
        self.position_rows: tuple[PositionRow, ...] = ()
        self.charts = ChartHistory()             # what the status page plots
        self._price_seq = 0
        # When JetStream last stored a price batch (monotonic; the start until then): /readyz.
        self.prices_stored_at = time.monotonic()
        self._account_seq = 0
        self._last_account: tuple | None = None
        self._last_account_sent = 0.0
        self._last_specs: bytes = b""
        self._dropped_seen = 0

    def _subject(self, channel: subjects.Channel) -> str:
        return subjects.user_subject(self.identity.user_id, channel)

    async def run(self, stop: asyncio.Event) -> None:
        intervals = self.settings.intervals
        await asyncio.gather(
            self._every(stop, intervals.prices_s, self.publish_prices),
            self._every(stop, intervals.prices_s, self.check_account),  # changes show at the price cadence
            self._every(stop, intervals.symbols_refresh_s, self.publish_symbols, wake=self.config.symbols_changed),
        )

    async def _every(self, stop: asyncio.Event, seconds: float, action: Any, wake: asyncio.Event | None = None) -> None:
        await every(stop, seconds, action, clock=self.clock, after=self.show_terminal_state, wake=wake)

    def show_terminal_state(self) -> None:
        self.metrics.terminal_connected.set(1 if self.terminal.connected else 0)
        self.metrics.server_offset.set(self.terminal.server_clock.offset_s())
        self.metrics.server_offset_measured.set(self.terminal.server_clock.offset.at_ms / 1000)
        skew = self.terminal.server_clock.skew.skew()
        if skew.measured_ms is not None:
            self.metrics.clock_skew.set(skew.measured_ms / 1000)
        self.metrics.clock_correction.set(skew.correction_ms / 1000)

    # ------------------------------------------------------------------ symbols (MT5 thread)
    def refresh_symbol_map(self) -> symbols_pb2.SymbolSpecList:
        effective = self.config.effective
        wanted = effective.streamed_symbols
        mapping = discover_symbol_map(wanted, self.terminal.broker_symbols(), dict(effective.symbol_overrides))
        missing = sorted(set(wanted) - set(mapping))
        if missing:
            log.warning("the broker offers no symbol for %s", ", ".join(missing))
        infos = {}
        for canonical, broker in mapping.items():
            self.terminal.select(broker)
            info = self.terminal.symbol_info(broker)
            if info is not None:
                infos[canonical] = info
        self.infos = infos
        self.executor.symbol_map = {c: i.name for c, i in infos.items()}
        return symbols_pb2.SymbolSpecList(
            user_id=self.identity.user_id, timestamp=now_ms(self.clock),
            specs=[convert.symbol_spec(c, i) for c, i in infos.items()])

    async def publish_symbols(self) -> None:
        await self.market_data.follow(self.config.market_data_symbols)  # first: needs no terminal
        specs = await self.mt5.run(self.refresh_symbol_map)
        body = symbols_pb2.SymbolSpecList(specs=specs.specs).SerializeToString(deterministic=True)
        if body != self._last_specs:
            self.publisher.enqueue("symbols", self._subject(subjects.Channel.SYMBOLS),
                                   f"{self.identity.session_id}:s:{specs.timestamp}", specs.SerializeToString())
            self._last_specs = body  # only once stored: a refused write is tried again

    # ------------------------------------------------------------------ prices
    def read_quotes(self) -> list[prices_pb2.ClientPrice]:
        server = self.settings.mt5.server or ""
        quotes = []
        for canonical, info in self.infos.items():
            quote = self.terminal.tick(info.name)
            if quote is not None and quote.bid > 0 and quote.ask >= quote.bid:
                quotes.append(convert.client_price(canonical, info.name, quote, info, server))
        return quotes

    async def publish_prices(self) -> None:
        started = time.monotonic()
        quotes = await self.mt5.run(self.read_quotes)
        now = now_ms(self.clock)
        for quote in quotes:
            self.latest[quote.symbol] = quote
            self.charts.record_market(quote.symbol, now, self._chart_sample(quote))
        self.metrics.quotes_read.inc(len(quotes))
        self.metrics.tick_rate.set(len(quotes) / max(self.settings.intervals.prices_s, 1e-3))
        if self.latest:
            oldest = min(q.timestamp for q in self.latest.values())
            self.metrics.price_staleness.set(max(now - oldest, 0) / 1000)
        if not self.publisher.connected:
            self._buffer(quotes)
            return
        for batch in self._backlog_batches():
            await self._send_prices(batch, now)
        if quotes:
            await self._send_prices(quotes, now)
        log.debug("prices published in %.1f ms", (time.monotonic() - started) * 1000)

    def _chart_sample(self, quote: prices_pb2.ClientPrice) -> dict[str, float | None]:
        """The broker's quote beside the server's reference price and indicators, as last
        received from ``md.<symbol>`` (none while it sends nothing)."""
        sample: dict[str, float | None] = {"bid": quote.bid, "ask": quote.ask}
        data = self.market_data.latest.get(quote.symbol)
        if data is not None:
            i = data.indicators
            sample.update(reference=(data.bid + data.ask) / 2, sma_20=i.sma_20, sma_50=i.sma_50, ema_12=i.ema_12,
                          ema_26=i.ema_26, bb_upper=i.bollinger_upper, bb_middle=i.bollinger_middle,
                          bb_lower=i.bollinger_lower, rsi=i.rsi, macd_line=i.macd_line, macd_signal=i.macd_signal)
        return sample

    def _buffer(self, quotes: list[prices_pb2.ClientPrice]) -> None:
        for quote in quotes:
            self.prices_buffer.add(quote)
        self.metrics.price_buffer_dropped.inc(max(self.prices_buffer.dropped - self._dropped_seen, 0))
        self._dropped_seen = self.prices_buffer.dropped

    def _backlog_batches(self) -> list[list[prices_pb2.ClientPrice]]:
        """Quotes buffered while offline, oldest first, at most one per symbol per batch."""
        batches: list[list[prices_pb2.ClientPrice]] = []
        for quote in self.prices_buffer.drain():
            home = next((b for b in batches if all(q.symbol != quote.symbol for q in b)), None)
            if home is None:
                batches.append(home := [])
            home.append(quote)
        return batches

    async def _send_prices(self, quotes: list[prices_pb2.ClientPrice], now: int) -> None:
        self._price_seq += 1
        batch = prices_pb2.ClientPriceStream(
            user_id=self.identity.user_id, broker_name=self._broker(),
            account_number=str(self.settings.mt5.login or ""), prices=quotes, batch_timestamp=now,
            sequence=self._price_seq)
        if await self.publisher.publish_now("prices", self._subject(subjects.Channel.PRICES),
                                            f"{self.identity.session_id}:p:{self._price_seq}",
                                            batch.SerializeToString()):
            self.prices_stored_at = time.monotonic()

    def _broker(self) -> str:
        return self.account.company if self.account is not None else ""

    # ------------------------------------------------------------------ account
    def read_account(self) -> tuple[Any, int]:
        account = self.executor.refresh_account_mode()
        positions = self.terminal.positions()
        self.position_rows = tuple(_position_row(p) for p in positions)
        return account, len(positions)

    async def check_account(self) -> None:
        account, positions = await self.mt5.run(self.read_account)
        self.account = account
        now = now_ms(self.clock)
        self.metrics.equity.set(account.equity)
        self.charts.record_account(now, balance=account.balance, equity=account.equity)
        self.metrics.positions_open.set(positions)
        for close_all in self.guard.observe(account.equity, now, self.config.effective):
            self.submit(close_all, "local")
        fingerprint = convert.account_fingerprint(account, positions)
        due = self.clock.now() - self._last_account_sent >= self.settings.intervals.account_s
        if fingerprint != self._last_account or due:
            self._publish_account(account, positions, now)  # a disk that refuses it raises: tried next round
            self._last_account, self._last_account_sent = fingerprint, self.clock.now()

    def _publish_account(self, account: Any, positions: int, now: int) -> None:
        """Numbered only once stored in the outbox: the sequence has no gap for a refused write."""
        sequence = self._account_seq + 1
        marks = self.guard.marks
        profile = convert.account_profile(
            self.identity.user_id, account, timestamp=now, open_positions=positions,
            day_start_equity=marks.day_start_equity, peak_equity=marks.peak_equity, sequence=sequence)
        self.publisher.enqueue("account", self._subject(subjects.Channel.ACCOUNT),
                               f"{self.identity.session_id}:a:{sequence}", profile.SerializeToString())
        self._account_seq = sequence


def _position_row(position: Any) -> PositionRow:
    side = "buy" if position.type == mt5.POSITION_TYPE_BUY else "sell"
    return PositionRow(position.ticket, position.symbol, side, position.volume, position.price_open, position.sl,
                       position.tp, position.profit, position.comment)

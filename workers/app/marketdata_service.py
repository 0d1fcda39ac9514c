"""The market-data worker: reference ticks -> M1 bars -> indicators and rolling
correlations -> ClientMarketData on ``md.<symbol>`` (last per subject) and a
CorrelationSnapshot on ``analytics.correlations`` for the operator's correlation pairs.

Computed once, read by every agent whose tier allows the symbol. Indicators update on each
closed bar; the latest bid/ask goes out at most every ``quote_interval_s`` in between.

A publish that fails (NATS away) is counted and logged once, and the worker goes on with
the next tick: market data is last-value, the next one replaces what was lost. A publish
that finds ``MARKET_DATA`` gone (a memory stream does not survive a server restart)
re-creates it from the layout. ``/readyz`` fails when nothing was published for longer
than ``publish_budget_s`` while the FX market is open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from mt5fleet.proto import subjects
from mt5fleet.proto.domain import sessions
from mt5fleet.proto.domain.market import Indicators, MarketData, Session
from mt5fleet.proto.domain.trading import SubscriptionTier
from mt5fleet.proto.runtime.errors import describe
from mt5fleet.proto.runtime.probes import Health
from mt5fleet.proto.subjects import JetStreamLayout
from mt5fleet.workers.adapters import wire
from mt5fleet.workers.adapters.feeds import ReferenceTickFeed, Tick
from mt5fleet.workers.adapters.metrics import recreated_counter
from mt5fleet.workers.adapters.streams import StreamPublisher
from mt5fleet.workers.core.bars import Bar, BarBuilder
from mt5fleet.workers.core.correlation import RollingCorrelation
from mt5fleet.workers.core.indicators import IndicatorSet

log = logging.getLogger("mt5fleet.worker.marketdata")


class MarketDataMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.ticks = Counter("mt5fleet_marketdata_ticks_total", "Reference ticks received", registry=r)
        self.bars = Counter("mt5fleet_marketdata_bars_total", "M1 bars closed", registry=r)
        self.published = Counter("mt5fleet_marketdata_published_total", "Messages published, by kind", ["kind"],
                                 registry=r)
        self.symbols = Gauge("mt5fleet_marketdata_symbols", "Symbols with at least one bar", registry=r)
        self.publish_errors = Counter("mt5fleet_marketdata_publish_errors_total",
                                      "Publishes that failed (the message is dropped: the next one replaces it)",
                                      registry=r)
        self.recreated = recreated_counter(r)


# Nothing published for this long while the market is open: not ready. The reference feed
# ticks several times a second on the majors; a minute of silence is a dead feed or NATS.
PUBLISH_BUDGET_S = 60.0
# A publish waits no longer for its acknowledgement: one tick stuck in a reconnect must not
# hold up every other symbol's (the next tick replaces it anyway).
PUBLISH_TIMEOUT_S = 2.0
WEDGED_AFTER_S = 600.0


class MarketDataWorker:
    def __init__(self, nc: Any, feed: ReferenceTickFeed, *, now_ms: Callable[[], int] | None = None,
                 correlation_window: int = 120, quote_interval_s: float = 1.0,
                 metrics: MarketDataMetrics | None = None, layout: JetStreamLayout | None = None,
                 publish_budget_s: float = PUBLISH_BUDGET_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.js = nc.jetstream()
        self.feed = feed
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.bars = BarBuilder()
        self.indicators: dict[str, IndicatorSet] = {}
        self.correlation = RollingCorrelation(correlation_window)
        self.quote_interval_ms = int(quote_interval_s * 1000)
        self.metrics = metrics or MarketDataMetrics()
        self._last_quote: dict[str, Tick] = {}
        self._last_sent_ms: dict[str, int] = {}
        self._round: dict[str, float] = {}
        self._round_time = 0
        self.publisher = StreamPublisher(self.js, layout or JetStreamLayout(),
                                         on_recreated=lambda name: self.metrics.recreated.labels(name).inc())
        self.publish_budget_s, self.clock = publish_budget_s, clock
        self._published_at = self._watched_from = clock()
        self._publish_error = ""
        self.health = Health(registry=self.metrics.registry, connected=lambda: nc.is_connected)
        self.health.add("publishing", self.publishing_problem, wedged_after_s=WEDGED_AFTER_S)

    async def run(self) -> None:
        async for tick in self.feed.ticks():
            await self.on_tick(tick)

    async def on_tick(self, tick: Tick) -> None:
        self.metrics.ticks.inc()
        self._last_quote[tick.symbol] = tick
        for bar in self.bars.on_tick(tick.symbol, tick.bid, tick.ask, tick.time_ms):
            await self._on_bar(bar)
        if tick.time_ms - self._last_sent_ms.get(tick.symbol, 0) >= self.quote_interval_ms:
            await self._publish(tick.symbol, tick.time_ms)

    async def _on_bar(self, bar: Bar) -> None:
        self.metrics.bars.inc()
        self.indicators.setdefault(bar.symbol, IndicatorSet()).update(bar.close)
        self.metrics.symbols.set(len(self.indicators))
        if bar.open_time_ms != self._round_time and self._round:
            await self._close_round()
        self._round_time = bar.open_time_ms
        self._round[bar.symbol] = bar.close
        await self._publish(bar.symbol, bar.close_time_ms, bar_time=bar.open_time_ms)

    async def _close_round(self) -> None:
        """All symbols' bars of one minute are in: one correlation update, one snapshot."""
        self.correlation.update(self._round, self._round_time)
        self._round = {}
        now = self.now_ms()
        snapshot = wire.correlation_snapshot_message(self.correlation.snapshot(now), now)
        if await self._send(subjects.CORRELATIONS_SUBJECT, snapshot.SerializeToString(),
                            headers={"Nats-Msg-Id": f"corr:{self._round_time}"}):
            self.metrics.published.labels("correlations").inc()

    async def _publish(self, symbol: str, at_ms: int, *, bar_time: int = 0) -> None:
        quote = self._last_quote.get(symbol)
        indicators = self.indicators.get(symbol)
        if quote is None:
            return
        now = self.now_ms()
        market = sessions.market_state(at_ms)
        data = MarketData(
            symbol=symbol, bid=quote.bid, ask=quote.ask, time_ms=now, tier=SubscriptionTier.FREE,
            indicators=indicators.values if indicators is not None else Indicators(),
            session=Session(market.is_open, market.in_rollover, market.active_sessions,
                            market.next_open_ms or None, market.next_close_ms or None),
            correlations=tuple(self.correlation.correlations_for(symbol, now)[:20]), bar_time_ms=bar_time or None)
        message = wire.market_data_message(data, with_indicators=indicators is not None)
        self._last_sent_ms[symbol] = at_ms
        if await self._send(subjects.market_data_subject(symbol), message.SerializeToString()):
            self.metrics.published.labels("market_data").inc()

    async def _send(self, subject: str, payload: bytes, **options: Any) -> bool:
        try:
            await self.publisher.publish(subject, payload, timeout=PUBLISH_TIMEOUT_S, **options)
        except Exception as exc:  # NATS away: dropped, the next tick carries newer data
            self.metrics.publish_errors.inc()
            if not self._publish_error:
                log.warning("publishing market data failed: %s; going on with the next tick", describe(exc))
            self._publish_error = describe(exc)
            return False
        if self._publish_error:
            log.info("publishing market data works again")
        self._published_at, self._publish_error = self.clock(), ""
        return True

    # ------------------------------------------------------------------ health
    def publishing_problem(self) -> str | None:
        """Nothing published for longer than the budget while the market is open."""
        now = self.clock()
        if not sessions.market_state(self.now_ms()).is_open:
            self._watched_from = now  # a closed market publishes nothing: the budget starts at the open
            return None
        silent_s = now - max(self._published_at, self._watched_from)
        if silent_s <= self.publish_budget_s:
            return None
        why = f"last error: {self._publish_error}" if self._publish_error else "no ticks from the reference feed"
        return f"no tick or bar published for {silent_s:.0f} s while the market is open ({why})"

"""The demo's signal engine: UniversalSignals priced from the reference feed the simulated
brokers quote around, published on ``signals.<symbol>`` at a steady rate.

Mostly market opens (BUY at the reference ask, SELL at the bid, SL/TP a fixed distance
away, a minute to live); now and then a CLOSE of an earlier open, in full or half. The
choice is seeded, the prices and timestamps come from the demo's market clock, and each
signal's id is its ``Nats-Msg-Id``, so a retried publish is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import Clock, now_ms
from mt5fleet.proto.v1 import commands_pb2, signals_pb2

log = logging.getLogger("mt5fleet.demo.feed")

# Every demo user trades EURUSD, so most signals reach everyone; the rest show the
# symbol gates (a free user does not trade gold) at work.
SYMBOL_WEIGHTS: Mapping[str, int] = {"EURUSD": 6, "GBPUSD": 3, "USDJPY": 2, "EURJPY": 1, "XAUUSD": 1, "AUDUSD": 1}
SL_POINTS: Mapping[str, int] = {"XAUUSD": 1000}   # gold moves in dollars: a wider stop
DEFAULT_SL_POINTS = 150                            # 15 pips on FX
REWARD_RATIO = 2                                   # TP twice as far as the SL
SIGNAL_TTL_MS = 60_000
CLOSE_SHARE = 0.25                                 # of signals, once something is open to close
STRATEGIES = ("breakout", "momentum", "mean-reversion")
SOURCE = "OANDA (simulated)"


@dataclass
class SignalFactory:
    """Decides and prices the next signal; pure apart from its seeded choices."""

    feed: ReferenceFeed
    run_id: str
    seed: int = 7
    weights: Mapping[str, int] = field(default_factory=lambda: dict(SYMBOL_WEIGHTS))
    count: int = 0
    opened: list[signals_pb2.UniversalSignal] = field(default_factory=list)  # opens not closed yet

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def next_signal(self, now: int) -> signals_pb2.UniversalSignal:
        self.count += 1
        signal_id = f"sig-{self.run_id}-{self.count:04d}"
        # The first signals open positions; closes follow once there is something to close.
        if len(self.opened) >= 2 and self._rng.random() < CLOSE_SHARE:
            target = self.opened.pop(self._rng.randrange(len(self.opened)))
            fraction = self._rng.choice((0.0, 0.0, 0.5))
            return close_signal(self.feed, signal_id, target, now, fraction)
        symbol = self._rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
        buy = self._rng.random() < 0.5
        signal = open_signal(self.feed, signal_id, symbol, buy, now, confidence=round(self._rng.uniform(0.55, 0.9), 2),
                             strategy=self._rng.choice(STRATEGIES))
        self.opened.append(signal)
        return signal


def open_signal(feed: ReferenceFeed, signal_id: str, symbol: str, buy: bool, now: int, *,
                confidence: float = 0.7, strategy: str = STRATEGIES[0]) -> signals_pb2.UniversalSignal:
    """A market order at the reference price (ask for a buy, bid for a sell), with SL and
    TP at fixed distances on the symbol's price grid."""
    bid, ask = feed.quote(symbol, now)
    digits = feed.digits(symbol)
    risk = SL_POINTS.get(symbol, DEFAULT_SL_POINTS) * feed.point(symbol)
    entry, sign = (ask, 1) if buy else (bid, -1)
    return signals_pb2.UniversalSignal(
        signal_id=signal_id, symbol=symbol, order_type=commands_pb2.BUY if buy else commands_pb2.SELL,
        reference_bid=bid, reference_ask=ask, entry=entry,
        stop_loss=round(entry - sign * risk, digits), take_profit=round(entry + sign * REWARD_RATIO * risk, digits),
        confidence=confidence, created_at=now, expires_at=now + SIGNAL_TTL_MS, strategy=strategy, source=SOURCE,
        action=commands_pb2.OPEN_POSITION, reason=f"{strategy} {'long' if buy else 'short'} {symbol}")


def close_signal(feed: ReferenceFeed, signal_id: str, target: signals_pb2.UniversalSignal, now: int,
                 fraction: float = 0.0) -> signals_pb2.UniversalSignal:
    """Close (``fraction`` of, 0: all of) the positions that ``target`` opened."""
    bid, ask = feed.quote(target.symbol, now)
    what = "close half" if fraction else "close"
    return signals_pb2.UniversalSignal(
        signal_id=signal_id, symbol=target.symbol, order_type=target.order_type, reference_bid=bid,
        reference_ask=ask, confidence=target.confidence, created_at=now, expires_at=now + SIGNAL_TTL_MS,
        strategy=target.strategy, source=SOURCE, action=commands_pb2.CLOSE_POSITION,
        target_signal_id=target.signal_id, close_fraction=fraction, reason=f"{what} {target.signal_id}")


async def run_feed(js: Any, factory: SignalFactory, clock: Clock, per_minute: float, stop: asyncio.Event,
                   on_published: Callable[[signals_pb2.UniversalSignal], None] = lambda _: None) -> None:
    """Publish one signal every ``60 / per_minute`` seconds until ``stop``; the first at once."""
    interval = 60.0 / per_minute
    while not stop.is_set():
        signal = factory.next_signal(now_ms(clock))
        try:
            await js.publish(subjects.signal_subject(signal.symbol), signal.SerializeToString(), timeout=5,
                             headers={"Nats-Msg-Id": signal.signal_id})
        except Exception as exc:  # the server is going away: the next one may get through
            log.warning("signal %s not published: %s", signal.signal_id, exc)
        else:
            on_published(signal)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass

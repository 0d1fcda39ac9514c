"""M1 (or any fixed timeframe) bars built from reference ticks, per symbol.

Ticks come in time order per symbol; a bar covers ``[open_time, open_time + timeframe)``
and holds the bid's OHLC, the tick count and the average spread in points. A bar is
*closed* (and returned once) when either

* a tick of the same symbol arrives in a later bar period, or
* ``flush(now_ms)`` is called at or after the end of its period (no tick since).

Gaps make no synthetic bars: a tick five minutes after the last one closes one bar and
opens the next at its own minute. An FX feed is silent while the price does not move
(and all weekend), and a flat bar invented for each silent minute would put fake zero
returns into every indicator; consumers that need a dense series (correlation rounds)
carry the last close forward themselves.

Late ticks: once a bar has been closed its period is history, so a tick in it (or any
earlier period) is dropped and counted in ``late_ticks``; a bar is never re-opened or
re-published. ``flush`` closes bars exactly at the period end, so a caller that expects
network delay passes ``now_ms - grace_ms``. A tick inside the current bar but older than
its last tick (out of order within the minute) still counts for high, low, volume and
spread, but only the newest tick by time sets the close (and the oldest sets the open).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mt5fleet.proto.domain.instruments import INSTRUMENTS


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed bar. Prices are bids in the quote currency; ``spread`` is in points."""

    symbol: str
    timeframe_s: int
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    tick_volume: int
    spread: float

    @property
    def close_time_ms(self) -> int:
        """The first instant after the bar (exclusive end)."""
        return self.open_time_ms + self.timeframe_s * 1000


class _OpenBar:
    """The bar being built: mutable on purpose (one per symbol, updated per tick)."""

    __slots__ = ("open_time_ms", "open", "high", "low", "close", "ticks", "spread_sum", "first_ms", "last_ms")

    def __init__(self, open_time_ms: int, bid: float, spread_points: float, time_ms: int) -> None:
        self.open_time_ms = open_time_ms
        self.open = self.high = self.low = self.close = bid
        self.ticks = 1
        self.spread_sum = spread_points
        self.first_ms = self.last_ms = time_ms

    def add(self, bid: float, spread_points: float, time_ms: int) -> None:
        self.high = max(self.high, bid)
        self.low = min(self.low, bid)
        self.ticks += 1
        self.spread_sum += spread_points
        if time_ms >= self.last_ms:  # equal times: the later arrival is the newer quote
            self.close, self.last_ms = bid, time_ms
        if time_ms < self.first_ms:
            self.open, self.first_ms = bid, time_ms

    def freeze(self, symbol: str, timeframe_s: int) -> Bar:
        return Bar(symbol=symbol, timeframe_s=timeframe_s, open_time_ms=self.open_time_ms, open=self.open,
                   high=self.high, low=self.low, close=self.close, tick_volume=self.ticks,
                   spread=self.spread_sum / self.ticks)


PointLookup = Mapping[str, float] | Callable[[str], float]

# The canonical symbols' points (EURUSD 0.00001, USDJPY 0.001, XAUUSD 0.01): the reference
# feeds, simulated or OANDA, quote on the same grid.
REFERENCE_POINTS: dict[str, float] = {name: instrument.point for name, instrument in INSTRUMENTS.items()}


class BarBuilder:
    """Builds bars for many symbols; ``point`` gives each symbol's point (e.g. 0.00001).

    ``point`` is a mapping or a function such as ``ReferenceFeed(...).point``; by default
    the canonical symbols' table ``REFERENCE_POINTS``. Ticks of a
    symbol without a point, or with a non-finite, non-positive or crossed (ask < bid)
    quote, are refused and counted in ``invalid_ticks``: a bad quote must not end up in a
    bar that every indicator then uses for the next 50 minutes.
    """

    def __init__(self, timeframe_s: int = 60, *, point: PointLookup = REFERENCE_POINTS) -> None:
        if timeframe_s <= 0:
            raise ValueError(f"timeframe must be a positive number of seconds, not {timeframe_s}")
        self.timeframe_s = timeframe_s
        self._period_ms = timeframe_s * 1000
        self._point = point.__getitem__ if isinstance(point, Mapping) else point
        self._open: dict[str, _OpenBar] = {}
        # The earliest period a new tick may still open: one past the last closed bar.
        self._next_period_ms: dict[str, int] = {}
        self.late_ticks = 0
        self.out_of_order_ticks = 0
        self.invalid_ticks = 0

    def period_start(self, time_ms: int) -> int:
        return time_ms - time_ms % self._period_ms

    def on_tick(self, symbol: str, bid: float, ask: float, time_ms: int) -> list[Bar]:
        """Add one tick; returns the bar it closed, if any (at most one)."""
        spread_points = self._spread_points(symbol, bid, ask)
        if spread_points is None:
            self.invalid_ticks += 1
            return []
        period = self.period_start(time_ms)
        current = self._open.get(symbol)
        floor = current.open_time_ms if current else self._next_period_ms.get(symbol, period)
        if period < floor:
            self.late_ticks += 1
            return []
        if current is not None and period == current.open_time_ms:
            if time_ms < current.last_ms:
                self.out_of_order_ticks += 1
            current.add(bid, spread_points, time_ms)
            return []
        closed = [self._close(symbol)] if current is not None else []
        self._open[symbol] = _OpenBar(period, bid, spread_points, time_ms)
        return closed

    def flush(self, now_ms: int) -> list[Bar]:
        """Close every bar whose period has ended by ``now_ms``, oldest first."""
        due = [s for s, bar in self._open.items() if bar.open_time_ms + self._period_ms <= now_ms]
        closed = [self._close(symbol) for symbol in due]
        return sorted(closed, key=lambda bar: (bar.open_time_ms, bar.symbol))

    def open_bar(self, symbol: str) -> Bar | None:
        """The bar still being built (not yet closed), as it stands."""
        current = self._open.get(symbol)
        return current.freeze(symbol, self.timeframe_s) if current else None

    def _close(self, symbol: str) -> Bar:
        current = self._open.pop(symbol)
        self._next_period_ms[symbol] = current.open_time_ms + self._period_ms
        return current.freeze(symbol, self.timeframe_s)

    def _spread_points(self, symbol: str, bid: float, ask: float) -> float | None:
        try:
            point = self._point(symbol)
        except KeyError:
            return None
        if not (math.isfinite(bid) and math.isfinite(ask) and bid > 0 and ask >= bid and point > 0):
            return None
        # Rounded: bid and ask are on the point grid, so the spread is a whole number of
        # points up to float noise (1.10002 - 1.10000 is 1.99999...e-05).
        return round((ask - bid) / point, 6)

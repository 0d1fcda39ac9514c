"""copy_rates_* and copy_ticks_* from the broker's quotes.

The real functions return numpy structured arrays; numpy is no dependency here, so these
return tuples of records with the same fields (``Bar`` for rates, ``Tick`` for ticks).
Ticks come once a second while the market is open (bid/ask ticks: FX has no trade ticks).
As in the real terminal, times in and out are the trade server's (``server_clock``): bars
are aligned in server time (a New York close server's daily bar spans one New York trading
day), and date arguments are server times. Bar high/low are sampled at nine points, an
approximation of the path inside the bar. Bars that fall entirely into a closed weekend do
not exist, as in the real terminal.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime

from mt5fleet.client.core.mt5_constants import (
    COPY_TICKS_ALL,
    COPY_TICKS_INFO,
    COPY_TICKS_TRADE,
    TIMEFRAME_D1,
    TIMEFRAME_H1,
    TIMEFRAME_H2,
    TIMEFRAME_H3,
    TIMEFRAME_H4,
    TIMEFRAME_H6,
    TIMEFRAME_H8,
    TIMEFRAME_H12,
    TIMEFRAME_M1,
    TIMEFRAME_M2,
    TIMEFRAME_M3,
    TIMEFRAME_M4,
    TIMEFRAME_M5,
    TIMEFRAME_M6,
    TIMEFRAME_M10,
    TIMEFRAME_M12,
    TIMEFRAME_M15,
    TIMEFRAME_M20,
    TIMEFRAME_M30,
    TIMEFRAME_MN1,
    TIMEFRAME_W1,
)
from mt5fleet.client.sim import server_clock
from mt5fleet.client.sim.market import BrokerMarket, SymbolSpec
from mt5fleet.client.sim.records import Bar, Tick
from mt5fleet.client.sim.server_clock import ServerZone
from mt5fleet.client.sim.symbol_records import tick_record

_MINUTE, _HOUR, _DAY = 60, 3600, 86_400
_TIMEFRAME_SECONDS = {
    TIMEFRAME_M1: _MINUTE, TIMEFRAME_M2: 2 * _MINUTE, TIMEFRAME_M3: 3 * _MINUTE, TIMEFRAME_M4: 4 * _MINUTE,
    TIMEFRAME_M5: 5 * _MINUTE, TIMEFRAME_M6: 6 * _MINUTE, TIMEFRAME_M10: 10 * _MINUTE,
    TIMEFRAME_M12: 12 * _MINUTE, TIMEFRAME_M15: 15 * _MINUTE, TIMEFRAME_M20: 20 * _MINUTE,
    TIMEFRAME_M30: 30 * _MINUTE, TIMEFRAME_H1: _HOUR, TIMEFRAME_H2: 2 * _HOUR, TIMEFRAME_H3: 3 * _HOUR,
    TIMEFRAME_H4: 4 * _HOUR, TIMEFRAME_H6: 6 * _HOUR, TIMEFRAME_H8: 8 * _HOUR, TIMEFRAME_H12: 12 * _HOUR,
    TIMEFRAME_D1: _DAY, TIMEFRAME_W1: 7 * _DAY,
}
TIMEFRAMES = frozenset(_TIMEFRAME_SECONDS) | {TIMEFRAME_MN1}
_WEEK_ORIGIN = 3 * _DAY  # 1970-01-04, a Sunday: weekly bars start on Sundays
HISTORY_START_S = 946_684_800  # 2000-01-01: the simulated terminal's history begins here
MAX_BARS = 100_000  # TerminalInfo.maxbars
MAX_TICKS = 100_000
TICK_MS = 1000
BAR_SAMPLES = 8


def bar_start(timeframe: int, t_s: int) -> int:
    if timeframe == TIMEFRAME_MN1:
        moment = datetime.fromtimestamp(t_s, UTC)
        return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp())
    seconds = _TIMEFRAME_SECONDS[timeframe]
    origin = _WEEK_ORIGIN if timeframe == TIMEFRAME_W1 else 0
    return t_s - (t_s - origin) % seconds


def next_bar_start(timeframe: int, start_s: int) -> int:
    if timeframe == TIMEFRAME_MN1:
        moment = datetime.fromtimestamp(start_s, UTC)
        year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp())
    return start_s + _TIMEFRAME_SECONDS[timeframe]


class PriceHistory:
    """Bar and tick history. Arguments and results are in server seconds / milliseconds,
    ``now_ms`` (the simulation's present) in UTC."""

    def __init__(self, market: BrokerMarket, zone: ServerZone) -> None:
        self._market = market
        self._zone = zone

    def _open_bars_back(self, timeframe: int, at_s: int) -> Iterator[tuple[int, int]]:
        """(start, end) of the bars holding open-market time, from the one containing ``at_s`` back."""
        start = bar_start(timeframe, at_s)
        while start >= HISTORY_START_S:
            end, start_ms = next_bar_start(timeframe, start), self._zone.to_utc_ms(start * 1000)
            if self._market.is_open(start_ms) or self._market.reopen_ms(start_ms) < self._zone.to_utc_ms(end * 1000):
                yield start, end
                start = bar_start(timeframe, start - 1)
            else:  # the whole bar is in a closed weekend: jump to the last bar before the close
                close_s = self._zone.to_server_ms(self._market.last_close_ms(start_ms)) // 1000
                start = bar_start(timeframe, close_s - 1)

    def _bar(self, spec: SymbolSpec, start_s: int, end_s: int, now_ms: int) -> Bar:
        first = self._market.reopen_ms(self._zone.to_utc_ms(start_s * 1000))
        last = max(first, min(self._zone.to_utc_ms(end_s * 1000) - 1, now_ms))
        bids = [self._market.quote(spec, first + (last - first) * i // BAR_SAMPLES).bid
                for i in range(BAR_SAMPLES + 1)]
        return Bar(time=start_s, open=bids[0], high=max(bids), low=min(bids), close=bids[-1],
                   tick_volume=max(1, (last - first) // TICK_MS), spread=spec.spread, real_volume=0)

    def _now_s(self, now_ms: int) -> int:
        return self._zone.to_server_ms(now_ms) // 1000

    def bars_back(self, spec: SymbolSpec, timeframe: int, at_s: int | None, skip: int, count: int,
                  now_ms: int) -> tuple[Bar, ...]:
        """``count`` bars ending ``skip`` bars before the bar containing ``at_s`` (None: now), oldest first."""
        now_s = self._now_s(now_ms)
        at_s = now_s if at_s is None else min(at_s, now_s)
        spans = itertools.islice(self._open_bars_back(timeframe, at_s), skip, skip + min(count, MAX_BARS))
        return tuple(reversed([self._bar(spec, start, end, now_ms) for start, end in spans]))

    def bars_between(self, spec: SymbolSpec, timeframe: int, from_s: int, to_s: int,
                     now_ms: int) -> tuple[Bar, ...]:
        """The bars opened within [from_s, to_s], oldest first."""
        spans = itertools.takewhile(lambda span: span[0] >= from_s,
                                    self._open_bars_back(timeframe, min(to_s, self._now_s(now_ms))))
        bars = [self._bar(spec, start, end, now_ms) for start, end in itertools.islice(spans, MAX_BARS)]
        return tuple(reversed(bars))

    def ticks(self, spec: SymbolSpec, from_ms: int, to_ms: int | None, count: int, flags: int,
              now_ms: int) -> tuple[Tick, ...]:
        """Up to ``count`` ticks within [from_ms, to_ms] (server time; None and at most: now), oldest first."""
        if flags not in (COPY_TICKS_ALL, COPY_TICKS_INFO, COPY_TICKS_TRADE):
            raise ValueError(f"unknown copy ticks flags {flags}")
        if flags == COPY_TICKS_TRADE:
            return ()  # spot FX: quotes only, no trade ticks
        ticks: list[Tick] = []
        t_ms = -(-self._zone.to_utc_ms(from_ms) // TICK_MS) * TICK_MS
        end_ms = now_ms if to_ms is None else min(self._zone.to_utc_ms(to_ms), now_ms)
        while t_ms <= end_ms and len(ticks) < min(count, MAX_TICKS):
            if not self._market.is_open(t_ms):
                t_ms = -(-self._market.reopen_ms(t_ms) // TICK_MS) * TICK_MS
                continue
            ticks.append(server_clock.tick(self._zone, tick_record(self._market.quote(spec, t_ms))))
            t_ms += TICK_MS
        return tuple(ticks)

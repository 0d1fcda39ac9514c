"""What the status page charts: short, bounded histories the agent keeps in memory.

The equity and balance curve and, per streamed symbol, the broker's bid/ask beside the
server's reference price and indicators (``md.<symbol>``), sampled on one time base so a
chart plots them together without aligning two clocks. Bounded (a VPS agent runs for
months) and thinned to one sample per ``min_spacing_ms``; pure: the caller passes the time.

Columns, not rows: the chart library (uPlot) takes ``[t[], s1[], s2[], ...]`` as is, and a
page that already holds the samples up to ``t`` asks only for the newer ones (``since``).
A value that is not known yet (an indicator before its warm-up) is ``None``, a gap.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

ACCOUNT_FIELDS = ("balance", "equity")
MARKET_FIELDS = ("bid", "ask", "reference", "sma_20", "sma_50", "ema_12", "ema_26", "bb_upper", "bb_middle",
                 "bb_lower", "rsi", "macd_line", "macd_signal")


class Series:
    """Samples of fixed named fields, oldest first, at most ``capacity`` of them."""

    def __init__(self, fields: tuple[str, ...], *, capacity: int, min_spacing_ms: int) -> None:
        self.fields = fields
        self.min_spacing_ms = min_spacing_ms
        self._rows: deque[tuple[int, tuple[float | None, ...]]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def last_t_ms(self) -> int:
        return self._rows[-1][0] if self._rows else 0

    def add(self, t_ms: int, values: Mapping[str, float | None]) -> bool:
        """Keep the sample unless it comes sooner than ``min_spacing_ms`` after the last one
        (or goes back in time: a clock step must not fold the chart over)."""
        if self._rows and t_ms < self.last_t_ms + self.min_spacing_ms:
            return False
        self._rows.append((t_ms, tuple(_known(values.get(name)) for name in self.fields)))
        return True

    def since(self, t_ms: int = 0) -> dict[str, list]:
        """The samples newer than ``t_ms`` as columns: ``t`` in seconds (uPlot's unit), then
        one list per field."""
        rows = [row for row in self._rows if row[0] > t_ms]
        columns: dict[str, list] = {"t": [t / 1000 for t, _ in rows]}
        for index, name in enumerate(self.fields):
            columns[name] = [values[index] for _, values in rows]
        return columns


def _known(value: float | None) -> float | None:
    """0 is the wire's "not computed yet" for an indicator or a price; NaN never reaches JSON."""
    if value is None or not math.isfinite(value) or value == 0:
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class Fill:
    """One of this user's fills, a marker on the symbol's price chart."""

    command_id: str
    symbol: str
    t_ms: int
    price: float
    side: str          # buy or sell
    reference: float   # the signal's reference entry (0: none)
    adjusted: float    # the entry the server adjusted to this broker (0: none)


class ChartHistory:
    """The page's charts for one agent: the account curve and one series per symbol."""

    def __init__(self, *, account_capacity: int = 5400, account_spacing_ms: int = 2_000,
                 market_capacity: int = 1800, market_spacing_ms: int = 1_000) -> None:
        self.account = Series(ACCOUNT_FIELDS, capacity=account_capacity, min_spacing_ms=account_spacing_ms)
        self.markets: dict[str, Series] = {}
        self._market_capacity, self._market_spacing_ms = market_capacity, market_spacing_ms

    def record_account(self, t_ms: int, *, balance: float, equity: float) -> None:
        self.account.add(t_ms, {"balance": balance, "equity": equity})

    def record_market(self, symbol: str, t_ms: int, values: Mapping[str, float | None]) -> None:
        series = self.markets.get(symbol)
        if series is None:
            series = self.markets[symbol] = Series(MARKET_FIELDS, capacity=self._market_capacity,
                                                   min_spacing_ms=self._market_spacing_ms)
        series.add(t_ms, values)

    def since(self, cursors: Mapping[str, int]) -> dict[str, dict[str, list]]:
        """Every series' samples newer than its cursor (``account`` and each symbol; a
        series without a cursor is sent whole)."""
        out = {"account": self.account.since(cursors.get("account", 0))}
        for symbol, series in self.markets.items():
            out[symbol] = series.since(cursors.get(symbol, 0))
        return out

    def cursors(self) -> dict[str, int]:
        """Where a reader that got everything now stands."""
        return {"account": self.account.last_t_ms} | {s: series.last_t_ms for s, series in self.markets.items()}

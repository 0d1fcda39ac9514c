"""What the status page charts: short, bounded histories the agent keeps in memory.

The equity and balance curve and, per streamed symbol, the broker's bid/ask beside the
server's reference price and indicators (``md.<symbol>``), sampled on one time base so a
chart plots them together without aligning two clocks. Bounded (a VPS agent runs for
months) and thinned to one sample per ``min_spacing_ms``; pure: the caller passes the time.

Columns, not rows: the chart library (uPlot) takes ``[t[], s1[], s2[], ...]`` as is, and a
page that already holds the samples up to ``t`` asks only for the newer ones (``since``).
A value that is not known yet (an indicator before its warm-up) is ``None``, a gap.

``snapshot`` and ``restore`` turn the histories into plain JSON-able data and back, so the
agent can keep them across a restart (``adapters.chart_file``); ``restore`` checks every
value and raises ``HistoryFormatError`` on anything it did not write.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mt5fleet.proto.subjects import SYMBOL_RE

ACCOUNT_FIELDS = ("balance", "equity")
MARKET_FIELDS = ("bid", "ask", "reference", "sma_20", "sma_50", "ema_12", "ema_26", "bb_upper", "bb_middle",
                 "bb_lower", "rsi", "macd_line", "macd_signal")
SNAPSHOT_FORMAT = "mt5fleet-chart-history/1"
# A snapshot keeps at most this many symbols (the most recently sampled): its size stays bounded
# even if the tier's symbols changed many times while the agent ran.
MAX_SNAPSHOT_SYMBOLS = 64


class HistoryFormatError(ValueError):
    """A snapshot that is not one ``ChartHistory.snapshot`` wrote."""


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

    def rows(self) -> list[list]:
        """Every sample as ``[t_ms, value, ...]`` in ``fields`` order (a snapshot's rows)."""
        return [[t, *values] for t, values in self._rows]

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
        self._market(symbol).add(t_ms, values)

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

    def snapshot(self) -> dict[str, Any]:
        """The histories as plain data (lists, numbers, None): what ``restore`` takes back."""
        recent = sorted(self.markets.items(), key=lambda item: item[1].last_t_ms, reverse=True)
        return {"format": SNAPSHOT_FORMAT, "account": _series_snapshot(self.account),
                "markets": {symbol: _series_snapshot(series) for symbol, series in recent[:MAX_SNAPSHOT_SYMBOLS]}}

    def restore(self, snapshot: Any) -> int:
        """Samples of a snapshot put before any taken since (a fresh history: the agent
        restores before it samples). Checked whole before anything is kept; raises
        ``HistoryFormatError`` saying what is wrong. Returns how many samples it kept."""
        if not isinstance(snapshot, dict) or snapshot.get("format") != SNAPSHOT_FORMAT:
            raise HistoryFormatError(f"not a chart history (format {_short(snapshot, 'format')!r}, "
                                     f"expected {SNAPSHOT_FORMAT!r})")
        markets = snapshot.get("markets", {})
        if not isinstance(markets, dict) or len(markets) > MAX_SNAPSHOT_SYMBOLS:
            raise HistoryFormatError("markets: not a mapping of at most "
                                     f"{MAX_SNAPSHOT_SYMBOLS} symbols")
        strange = [str(symbol)[:20] for symbol in markets if not SYMBOL_RE.fullmatch(str(symbol))]
        if strange:
            raise HistoryFormatError(f"markets: {strange[0]!r} is not a symbol")
        account = _checked_rows(snapshot.get("account"), "account")
        checked = {str(symbol): _checked_rows(body, f"markets.{symbol}") for symbol, body in markets.items()}
        kept = sum(self.account.add(t, values) for t, values in account)
        for symbol, rows in checked.items():
            kept += sum(self._market(symbol).add(t, values) for t, values in rows)
        return kept

    def _market(self, symbol: str) -> Series:
        series = self.markets.get(symbol)
        if series is None:
            series = self.markets[symbol] = Series(MARKET_FIELDS, capacity=self._market_capacity,
                                                   min_spacing_ms=self._market_spacing_ms)
        return series


def _series_snapshot(series: Series) -> dict[str, Any]:
    return {"fields": list(series.fields), "rows": series.rows()}


def _short(value: Any, key: str) -> str:
    found = value.get(key) if isinstance(value, dict) else None
    return str(found)[:40]


def _checked_rows(body: Any, where: str) -> list[tuple[int, dict[str, float | None]]]:
    """A series' rows by field name (fields added or dropped by an upgrade line up by name)."""
    if not isinstance(body, dict) or not isinstance(body.get("fields"), list) or not isinstance(body.get("rows"), list):
        raise HistoryFormatError(f"{where}: expected fields and rows")
    fields = body["fields"]
    if not all(isinstance(name, str) for name in fields):
        raise HistoryFormatError(f"{where}: field names must be strings")
    out = []
    for index, row in enumerate(body["rows"]):
        if not isinstance(row, list) or len(row) != len(fields) + 1:
            raise HistoryFormatError(f"{where}: row {index} is not [t, {len(fields)} values]")
        t, *values = row
        if isinstance(t, bool) or not isinstance(t, int) or t <= 0:
            raise HistoryFormatError(f"{where}: row {index} has no valid time (unix ms)")
        for value in values:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value)):
                raise HistoryFormatError(f"{where}: row {index} holds {str(value)[:20]!r}, not a number")
        out.append((t, dict(zip(fields, values, strict=True))))
    return out

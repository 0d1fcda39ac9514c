"""Rolling Pearson correlations of M1 log returns for many symbols at once, and the
choice of a user's correlation symbols from them.

``RollingCorrelation.update`` takes one *round*: the closes of the bars that closed for
one minute. Every symbol seen before gets a log return each round; a symbol with no bar
that minute carries its last close forward (return 0), because the bar builder makes no
bars for silent minutes and an FX price with no tick did not move. Every pair therefore
shares the same rounds, so one ring buffer of returns per symbol serves all its pairs:
the sample leaving a full pair's window is the one each symbol's buffer evicts.

Per pair the five sums (x, y, x^2, y^2, xy) are updated in O(1), so a round costs
O(pairs). As in ``indicators``, add/remove rounding would accumulate over months, so
every ``window`` rounds all sums are recomputed exactly with ``math.fsum`` from the
buffers: amortised O(pairs) per round, bounded error for ever.

The choice of a user's correlation symbols from a matrix is ``select_pairs`` of the shared
domain (``mt5fleet.proto.domain.correlations``): the operator makes it from the published
``CorrelationSnapshot``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence

from mt5fleet.proto.domain.correlations import Pair, pair_key, select_pairs
from mt5fleet.proto.domain.market import Correlation


class _PairSums:
    __slots__ = ("count", "sx", "sy", "sxx", "syy", "sxy")

    def __init__(self) -> None:
        self.count = 0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0

    def add(self, x: float, y: float, sign: float = 1.0) -> None:
        self.count += int(sign)
        self.sx += sign * x
        self.sy += sign * y
        self.sxx += sign * x * x
        self.syy += sign * y * y
        self.sxy += sign * x * y

    def recompute(self, xs: Sequence[float], ys: Sequence[float]) -> None:
        self.count = len(xs)
        self.sx, self.sy = math.fsum(xs), math.fsum(ys)
        self.sxx = math.fsum(x * x for x in xs)
        self.syy = math.fsum(y * y for y in ys)
        self.sxy = math.fsum(x * y for x, y in zip(xs, ys, strict=True))

    def rho(self) -> float | None:
        n = self.count
        var_x = self.sxx - self.sx * self.sx / n
        var_y = self.syy - self.sy * self.sy / n
        if var_x <= 0.0 or var_y <= 0.0:
            return None
        rho = (self.sxy - self.sx * self.sy / n) / math.sqrt(var_x * var_y)
        return max(-1.0, min(1.0, rho))


class _SymbolReturns:
    __slots__ = ("last_close", "returns", "moving")

    def __init__(self, close: float, window: int) -> None:
        self.last_close = close
        self.returns: deque[float] = deque(maxlen=window)
        # Non-zero returns in the window: a flat symbol (market closed, frozen feed) has
        # no correlation, and its variance must read as exactly 0, not as rounding residue.
        self.moving = 0


class RollingCorrelation:
    """Pearson correlation of every pair of symbols over the last ``window`` M1 returns."""

    def __init__(self, window: int = 120) -> None:
        if window < 3:
            raise ValueError(f"a correlation window needs at least 3 returns, not {window}")
        self.window = window
        self._symbols: dict[str, _SymbolReturns] = {}
        self._pairs: dict[Pair, _PairSums] = {}
        self._since_refresh = 0
        self.rounds = 0
        self.last_bar_time_ms: int | None = None
        self.skipped_rounds = 0
        self.invalid_closes = 0

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted(self._symbols))

    def update(self, closes: Mapping[str, float], bar_time_ms: int | None = None) -> None:
        """Add one minute's closes (symbol -> close). A round not newer than the last is ignored."""
        if bar_time_ms is not None:
            if self.last_bar_time_ms is not None and bar_time_ms <= self.last_bar_time_ms:
                self.skipped_rounds += 1
                return
            self.last_bar_time_ms = bar_time_ms
        valid = self._valid(closes)
        evicted = self._append_returns(valid)
        self._update_pairs(evicted)
        self._register_new(valid)
        self.rounds += 1
        self._since_refresh += 1
        if self._since_refresh >= self.window:
            self._refresh()

    def matrix(self) -> dict[Pair, float]:
        """rho per pair with a full window and two moving symbols, keyed (a, b) with a < b."""
        out: dict[Pair, float] = {}
        for (a, b), sums in self._pairs.items():
            if sums.count < self.window or not (self._symbols[a].moving and self._symbols[b].moving):
                continue
            rho = sums.rho()
            if rho is not None:
                out[(a, b)] = rho
        return out

    def snapshot(self, now_ms: int) -> tuple[Correlation, ...]:
        """Every pair of ``matrix()`` once, in pair order (for the CorrelationSnapshot)."""
        return tuple(self._correlation(a, b, rho, now_ms) for (a, b), rho in sorted(self.matrix().items()))

    def correlations_for(self, symbol: str, now_ms: int) -> list[Correlation]:
        """The pairs involving ``symbol`` (for ClientMarketData.correlations), strongest first."""
        rows = [(pair, rho) for pair, rho in self.matrix().items() if symbol in pair]
        rows.sort(key=lambda row: (-abs(row[1]), row[0]))
        return [self._correlation(a, b, rho, now_ms) for (a, b), rho in rows]

    def select_pairs(self, primary: Sequence[str], *, threshold: float = 0.7, limit: int | None = None) -> list[str]:
        return select_pairs(primary, self.matrix(), threshold=threshold, limit=limit)

    def _correlation(self, a: str, b: str, rho: float, now_ms: int) -> Correlation:
        return Correlation(symbol_a=a, symbol_b=b, coefficient=rho, window=self.window, computed_at_ms=now_ms)

    def _valid(self, closes: Mapping[str, float]) -> dict[str, float]:
        valid = {s: c for s, c in closes.items() if math.isfinite(c) and c > 0}
        self.invalid_closes += len(closes) - len(valid)
        return valid

    def _append_returns(self, closes: Mapping[str, float]) -> dict[str, float | None]:
        """Each known symbol's return this round; returns what each buffer evicted."""
        evicted: dict[str, float | None] = {}
        for symbol, state in self._symbols.items():
            close = closes.get(symbol, state.last_close)
            value = math.log(close / state.last_close)
            state.last_close = close
            old = state.returns[0] if len(state.returns) == self.window else None
            if old is not None and old != 0.0:
                state.moving -= 1
            state.returns.append(value)
            state.moving += value != 0.0
            evicted[symbol] = old
        return evicted

    def _update_pairs(self, evicted: Mapping[str, float | None]) -> None:
        for (a, b), sums in self._pairs.items():
            ra, rb = self._symbols[a].returns, self._symbols[b].returns
            sums.add(ra[-1], rb[-1])
            old_a, old_b = evicted[a], evicted[b]
            if sums.count > self.window and old_a is not None and old_b is not None:
                # Both symbols had a return every round since the pair began, so their
                # evicted samples are the pair's oldest, from the same round.
                sums.add(old_a, old_b, -1.0)

    def _register_new(self, closes: Mapping[str, float]) -> None:
        for symbol in sorted(set(closes) - set(self._symbols)):
            for other in self._symbols:
                self._pairs[pair_key(symbol, other)] = _PairSums()
            self._symbols[symbol] = _SymbolReturns(closes[symbol], self.window)

    def _refresh(self) -> None:
        for (a, b), sums in self._pairs.items():
            n = sums.count
            if n:
                sums.recompute(list(self._symbols[a].returns)[-n:], list(self._symbols[b].returns)[-n:])
        self._since_refresh = 0



"""A deterministic reference price feed (OANDA-like) for the canonical FX symbols and gold.

Every currency has a log-value process against an abstract numeraire; a pair's price is
``base_price * exp(x_base - x_quote)``. Pairs therefore move together the way real ones do
(a USD move shows in every USD pair) and crosses stay consistent (EURJPY ~ EURUSD * USDJPY).

Each currency process is a random walk on a 100 ms grid, built so that the value at any
grid step is computed directly, without simulating the steps before it:

* at block boundaries (every 2**25 steps, about 39 days) the walk takes an independent
  normal value with the variance a walk would reach in half a block, so prices stay near
  their base levels whatever the date;
* inside a block the walk is a Brownian bridge between its two boundary values, filled in
  by bisection: the midpoint of an interval of 2h steps is the mean of its ends plus a
  normal of variance h/2, drawn from a hash of (seed, currency, step).

So a quote costs about 25 hashes per currency, needs no state beyond a small cache, is
identical whatever order or pattern of queries produced it, and memory stays bounded over
any simulated period. Prices stand still while the FX market is closed (weekends).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b

from mt5fleet.client.sim.market_hours import MarketCalendar
from mt5fleet.proto.domain.instruments import INSTRUMENTS, Instrument

STEP_MS = 100
LEVELS = 25
BLOCK_STEPS = 1 << LEVELS
# Volatility is quoted per year of trading time: prices only move while the market is open.
TRADING_SECONDS_PER_YEAR = 260 * 86_400
_TWO_PI = 2.0 * math.pi
_UINT32 = 4_294_967_296.0


@dataclass(frozen=True)
class Currency:
    usd_value: float  # its typical value in US dollars: sets the pairs' base prices
    annual_vol: float  # of its own factor; a pair's volatility combines both currencies'


CURRENCIES: dict[str, Currency] = {
    "USD": Currency(1.0, 0.040),
    "EUR": Currency(1.085, 0.045),
    "GBP": Currency(1.27, 0.050),
    "JPY": Currency(1 / 150.0, 0.070),
    "CHF": Currency(1 / 0.88, 0.050),
    "AUD": Currency(0.66, 0.075),
    "CAD": Currency(1 / 1.36, 0.040),
    "NZD": Currency(0.60, 0.075),
    "XAU": Currency(2350.0, 0.130),
}

# The reference (interbank-like) spread of each instrument, in points: tight.
REFERENCE_SPREAD_POINTS: dict[str, int] = {
    "EURUSD": 2, "GBPUSD": 3, "USDJPY": 3, "USDCHF": 4, "AUDUSD": 3, "USDCAD": 4,
    "NZDUSD": 5, "EURGBP": 5, "EURJPY": 6, "GBPJPY": 9, "XAUUSD": 12,
}


def _salt(seed: int, *parts: str) -> bytes:
    return blake2b(":".join((str(seed), *parts)).encode(), digest_size=8).digest()


def _hash_normal(salt: bytes, index: int) -> float:
    """A standard normal drawn from a hash of (salt, index): Box-Muller on two 32-bit uniforms."""
    bits = int.from_bytes(blake2b(salt + index.to_bytes(8, "little", signed=True), digest_size=8).digest(), "little")
    u1 = ((bits >> 32) + 1) / (_UINT32 + 1)  # (0, 1): log stays finite
    u2 = (bits & 0xFFFFFFFF) / _UINT32
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)


class _CurrencyWalk:
    """One currency's random walk (variance 1 per step), evaluated at any step directly."""

    # Bisection nodes near recent queries are shared by the next ones; a bounded memo of
    # them saves most hashes. Node values are pure functions of (seed, index), so dropping
    # the memo never changes a price.
    NODE_MEMO_LIMIT = 1024

    def __init__(self, seed: int, code: str) -> None:
        self._anchor_salt = _salt(seed, code, "anchor")
        self._bridge_salt = _salt(seed, code, "bridge")
        self._anchor_sd = math.sqrt(BLOCK_STEPS / 2)
        self._nodes: dict[int, float] = {}
        self._anchors: dict[int, float] = {}

    def _anchor(self, block: int) -> float:
        value = self._anchors.get(block)
        if value is None:
            if len(self._anchors) > 16:
                self._anchors.clear()
            value = self._anchors[block] = self._anchor_sd * _hash_normal(self._anchor_salt, block)
        return value

    def value(self, step: int) -> float:
        block, offset = divmod(step, BLOCK_STEPS)
        left, right = self._anchor(block), self._anchor(block + 1)
        if offset == 0:
            return left
        if len(self._nodes) > self.NODE_MEMO_LIMIT:
            self._nodes.clear()
        origin = step - offset
        lo, hi = 0, BLOCK_STEPS
        while True:
            mid = (lo + hi) // 2
            value = self._nodes.get(origin + mid)
            if value is None:
                half = (hi - lo) // 2
                value = (left + right) / 2 + math.sqrt(half / 2) * _hash_normal(self._bridge_salt, origin + mid)
                self._nodes[origin + mid] = value
            if mid == offset:
                return value
            if offset < mid:
                hi, right = mid, value
            else:
                lo, left = mid, value


class ReferenceFeed:
    """Seeded reference quotes by time: ``quote(symbol, t_ms) -> (bid, ask)``.

    ``t_ms`` is unix time in milliseconds. The same seed gives the same prices in every
    process, whatever was asked before.
    """

    def __init__(self, seed: int = 0, *, symbols: Iterable[str] | None = None, freeze_weekends: bool = True) -> None:
        chosen = tuple(symbols) if symbols is not None else tuple(INSTRUMENTS)
        unknown = [name for name in chosen if name not in INSTRUMENTS]
        if unknown:
            raise KeyError(f"no reference process for {unknown}; known: {sorted(INSTRUMENTS)}")
        self.seed = seed
        self._symbols = chosen
        self._freeze_weekends = freeze_weekends
        self._calendar = MarketCalendar()
        step_years = STEP_MS / 1000 / TRADING_SECONDS_PER_YEAR
        self._walks = {code: _CurrencyWalk(seed, code) for code in CURRENCIES}
        self._step_vol = {code: c.annual_vol * math.sqrt(step_years) for code, c in CURRENCIES.items()}
        # A terminal asks for the same symbol at the same step several times per call.
        self._last_mid: dict[str, tuple[int, float]] = {}

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    def _spec(self, symbol: str) -> Instrument:
        if symbol not in self._symbols:
            raise KeyError(f"unknown reference symbol {symbol!r}")
        return INSTRUMENTS[symbol]

    def digits(self, symbol: str) -> int:
        return self._spec(symbol).digits

    def point(self, symbol: str) -> float:
        return self._spec(symbol).point

    def currencies(self, symbol: str) -> tuple[str, str]:
        """(base, quote): profit is in the quote currency, margin in the base currency."""
        spec = self._spec(symbol)
        return spec.base, spec.quote

    def description(self, symbol: str) -> str:
        return self._spec(symbol).description

    def spread_points(self, symbol: str) -> int:
        return REFERENCE_SPREAD_POINTS[symbol]

    def volatility(self, symbol: str) -> float:
        """Annualised volatility of the symbol's log price (per year of trading time)."""
        spec = self._spec(symbol)
        return math.hypot(CURRENCIES[spec.base].annual_vol, CURRENCIES[spec.quote].annual_vol)

    def is_open(self, t_ms: int) -> bool:
        return self._calendar.is_open(t_ms)

    def price_time_ms(self, t_ms: int) -> int:
        """When the price current at ``t_ms`` was set: on the grid, or the Friday close at weekends."""
        t_ms = int(t_ms)
        if self._freeze_weekends:
            t_ms = self._calendar.price_time_ms(t_ms)
        return t_ms - t_ms % STEP_MS

    def _log_value(self, code: str, step: int) -> float:
        return self._step_vol[code] * self._walks[code].value(step)

    def mid(self, symbol: str, t_ms: int) -> float:
        """The unrounded mid price: brokers add their own offset and spread to it."""
        spec = self._spec(symbol)
        step = self.price_time_ms(t_ms) // STEP_MS
        last = self._last_mid.get(symbol)
        if last is not None and last[0] == step:
            return last[1]
        base = CURRENCIES[spec.base].usd_value / CURRENCIES[spec.quote].usd_value
        mid = base * math.exp(self._log_value(spec.base, step) - self._log_value(spec.quote, step))
        self._last_mid[symbol] = (step, mid)
        return mid

    def quote(self, symbol: str, t_ms: int) -> tuple[float, float]:
        """(bid, ask) rounded to the symbol's digits, the reference spread apart."""
        spec, spread = self._spec(symbol), REFERENCE_SPREAD_POINTS[symbol]
        point = spec.point
        bid_points = round(self.mid(symbol, t_ms) / point - spread / 2)
        return round(bid_points * point, spec.digits), round((bid_points + spread) * point, spec.digits)

    def reopen_ms(self, t_ms: int) -> int:
        """When the market is next open at or after ``t_ms``."""
        return self._calendar.reopen_ms(t_ms)

    def last_close_ms(self, t_ms: int) -> int:
        """While closed: when the market closed (the Friday close); while open: ``t_ms`` itself."""
        return self._calendar.price_time_ms(t_ms)

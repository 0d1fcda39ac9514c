"""One broker's view of the market: its symbols, its quotes and currency conversion.

Broker quote = reference mid + the broker's offset, widened to the broker's spread and
rounded to the broker's digits, so every broker differs from the reference feed (and from
each other) in a fixed, known way: what the adjustment workers have to correct for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mt5fleet.client.core.mt5_constants import BOOK_TYPE_BUY, BOOK_TYPE_SELL
from mt5fleet.client.sim.broker import BrokerProfile
from mt5fleet.client.sim.feed import TRADING_SECONDS_PER_YEAR, ReferenceFeed
from mt5fleet.client.sim.records import BookInfo
from mt5fleet.proto.domain.instruments import major_currency

# Account currencies counted in a minor unit: a cent account's balance is in US cents.
BOOK_DEPTH = 5


@dataclass(frozen=True)
class SymbolSpec:
    """A broker symbol: its name and the static facts everything else is computed from."""

    canonical: str
    name: str
    digits: int
    point: float
    contract_size: float
    base: str  # margin currency
    quote: str  # profit currency
    spread: int  # points
    offset: int  # points against the reference mid
    description: str
    path: str


@dataclass(frozen=True)
class Quote:
    bid: float
    ask: float
    time_msc: int  # when this price was set (frozen at the Friday close over the weekend)


def _path(canonical: str, base: str, quote: str) -> str:
    if base == "XAU":
        return f"Metals\\{canonical}"
    return f"Forex\\{'Majors' if 'USD' in (base, quote) else 'Crosses'}\\{canonical}"


class BrokerMarket:
    def __init__(self, broker: BrokerProfile, feed: ReferenceFeed) -> None:
        self._broker = broker
        self._feed = feed
        offered = broker.symbols if broker.symbols is not None else feed.symbols
        self._specs = {spec.name: spec for spec in (self._make_spec(canonical) for canonical in offered)}
        self._by_currencies = {(spec.base, spec.quote): spec for spec in self._specs.values()}

    def _make_spec(self, canonical: str) -> SymbolSpec:
        broker, feed = self._broker, self._feed
        digits = broker.digits.get(canonical, feed.digits(canonical))
        base, quote = feed.currencies(canonical)
        name = broker.broker_symbol(canonical)
        return SymbolSpec(
            canonical=canonical, name=name, digits=digits, point=round(10.0**-digits, digits),
            contract_size=broker.contract_size(canonical), base=base, quote=quote,
            spread=broker.spread_for(canonical, feed.spread_points(canonical), digits - feed.digits(canonical)),
            offset=broker.offset_for(canonical), description=feed.description(canonical),
            path=_path(name, base, quote),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def spec(self, name: str) -> SymbolSpec | None:
        return self._specs.get(name)

    def is_open(self, t_ms: int) -> bool:
        return self._feed.is_open(t_ms)

    def reopen_ms(self, t_ms: int) -> int:
        return self._feed.reopen_ms(t_ms)

    def last_close_ms(self, t_ms: int) -> int:
        return self._feed.last_close_ms(t_ms)

    def quote(self, spec: SymbolSpec, t_ms: int) -> Quote:
        mid = self._feed.mid(spec.canonical, t_ms) + spec.offset * spec.point
        bid_points = round(mid / spec.point - spec.spread / 2)
        return Quote(
            bid=round(bid_points * spec.point, spec.digits),
            ask=round((bid_points + spec.spread) * spec.point, spec.digits),
            time_msc=self._feed.price_time_ms(t_ms),
        )

    def typical_move(self, spec: SymbolSpec, price: float, duration_ms: int) -> float:
        """One standard deviation of the price's move over ``duration_ms`` of open market."""
        years = duration_ms / 1000 / TRADING_SECONDS_PER_YEAR
        return price * self._feed.volatility(spec.canonical) * math.sqrt(max(years, 0.0))

    def _pair_mid(self, base: str, quote: str, t_ms: int) -> float | None:
        spec = self._by_currencies.get((base, quote))
        if spec is not None:
            q = self.quote(spec, t_ms)
            return (q.bid + q.ask) / 2
        canonical = base + quote  # not offered by this broker: the reference market's rate
        return self._feed.mid(canonical, t_ms) if canonical in self._feed.symbols else None

    def _major_rate(self, src: str, dst: str, t_ms: int) -> float:
        if src == dst:
            return 1.0
        direct = self._pair_mid(src, dst, t_ms)
        if direct is not None:
            return direct
        inverse = self._pair_mid(dst, src, t_ms)
        if inverse is not None:
            return 1.0 / inverse
        if "USD" not in (src, dst):
            return self._major_rate(src, "USD", t_ms) * self._major_rate("USD", dst, t_ms)
        raise LookupError(f"no quote converts {src} to {dst}")

    def rate(self, src: str, dst: str, t_ms: int) -> float:
        """How many units of ``dst`` one unit of ``src`` is worth now (the sim's own cross quotes)."""
        src_major, src_units = major_currency(src)
        dst_major, dst_units = major_currency(dst)
        return self._major_rate(src_major, dst_major, t_ms) / src_units * dst_units

    def book(self, spec: SymbolSpec, t_ms: int) -> tuple[BookInfo, ...]:
        """A small synthetic depth of market: sells high to low, then buys high to low."""
        q = self.quote(spec, t_ms)
        step = max(spec.spread // 2, 1) * spec.point
        sells = [BookInfo(BOOK_TYPE_SELL, round(q.ask + i * step, spec.digits), 10 * (i + 1), 10.0 * (i + 1))
                 for i in reversed(range(BOOK_DEPTH))]
        buys = [BookInfo(BOOK_TYPE_BUY, round(q.bid - i * step, spec.digits), 10 * (i + 1), 10.0 * (i + 1))
                for i in range(BOOK_DEPTH)]
        return tuple(sells + buys)

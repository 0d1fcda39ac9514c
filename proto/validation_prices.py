"""Price batches at the edge: the hottest check of the platform (every agent, every second).

``check_price_batch`` first tries ``_well_formed``: one pass over the batch with the same
rules as the full check, written as plain comparisons, and names (user ids, symbols) looked
up in a set of names already found valid. It accepts only a batch the full check would
accept unchanged (every field valid, every symbol once), and returns what the full check
would. Anything else, one bad field or a repeated symbol, goes through the full check,
which names every violation. Measured in ``bench/workers.py`` (ingest): the full check
alone was 75-80 % of a replica's price work (issue 15).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mt5fleet.proto.domain.market import PriceBatch, Quote
from mt5fleet.proto.subjects import InvalidName, check_symbol, check_user_id
from mt5fleet.proto.v1.prices_pb2 import ClientPrice, ClientPriceStream
from mt5fleet.proto.validation_rules import (
    ACCOUNT_NUMBER_RE,
    DEFAULT_LIMITS,
    Checks,
    Limits,
    Violation,
    check_entries,
)

_MAX_NAME_LEN = 64   # as Checks._name_rule: no DNS label or symbol is longer


@dataclass(frozen=True)
class CheckedBatch:
    """A price batch with its good quotes, and why each dropped quote was dropped."""

    batch: PriceBatch
    rejected: tuple[Violation, ...] = ()


class KnownNames:
    """Names already found valid by ``rule``. Validity is a function of the string alone,
    and a fleet sends the same few thousand user ids and symbols over and over, so a set
    lookup replaces a regex. Bounded: cleared when full (a flood of distinct names costs
    the regex again, never memory)."""

    def __init__(self, rule: Callable[[str], object], limit: int = 100_000) -> None:
        self.rule, self.limit = rule, limit
        self._good: set[str] = set()

    def ok(self, name: str) -> bool:
        if name in self._good:
            return True
        if len(name) > _MAX_NAME_LEN or name.endswith("\n"):
            return False
        try:
            self.rule(name)
        except InvalidName:
            return False
        if len(self._good) >= self.limit:
            self._good.clear()
        self._good.add(name)
        return True


_USER_IDS = KnownNames(check_user_id)
_SYMBOLS = KnownNames(check_symbol)


def check_price_batch(msg: ClientPriceStream, now_ms: int,
                      limits: Limits = DEFAULT_LIMITS) -> CheckedBatch:
    """Envelope problems refuse the batch; a bad quote only costs itself."""
    batch = _well_formed(msg, now_ms, limits)
    return CheckedBatch(batch) if batch is not None else _checked(msg, now_ms, limits)


def _well_formed(msg: ClientPriceStream, now_ms: int, limits: Limits) -> PriceBatch | None:
    """The batch if every rule of ``_checked`` holds and no symbol repeats, else None."""
    earliest, latest = now_ms - limits.max_past_age_ms, now_ms + limits.max_future_skew_ms
    text_len, max_price = limits.max_text_len, limits.max_price   # both finite (Limits)
    prices = msg.prices
    if not (_USER_IDS.ok(msg.user_id) and len(msg.broker_name) <= text_len
            and (not msg.account_number or ACCOUNT_NUMBER_RE.match(msg.account_number))
            and 0 < msg.batch_timestamp and earliest <= msg.batch_timestamp <= latest
            and msg.sequence >= 0 and len(prices) <= limits.max_quotes_per_batch):
        return None
    quotes: list[Quote] = []
    for price in prices:
        # Each field read once: a protobuf attribute read is the cost here.
        symbol, bid, ask, spread, at = price.symbol, price.bid, price.ask, price.spread, price.timestamp
        digits, broker_symbol, broker_server = price.digits, price.broker_symbol, price.broker_server
        # Chained comparisons are False for NaN, and max_price is finite: no isfinite needed
        # for the prices; the spread has no upper bound, so +inf is excluded explicitly.
        if not (0.0 < bid <= ask <= max_price and 0.0 <= spread < math.inf
                and 0 < at and earliest <= at <= latest and 0 <= digits <= 10
                and len(broker_symbol) <= text_len and len(broker_server) <= text_len
                and _SYMBOLS.ok(symbol)):
            return None
        quotes.append(Quote(symbol, bid, ask, at, spread, broker_symbol, digits, broker_server))
    if len({quote.symbol for quote in quotes}) != len(quotes):
        return None   # a repeated symbol: the full check says which one was kept and why
    return PriceBatch(
        user_id=msg.user_id, broker_name=msg.broker_name, account_number=msg.account_number,
        sent_at_ms=msg.batch_timestamp, sequence=msg.sequence, quotes=tuple(quotes))


def _checked(msg: ClientPriceStream, now_ms: int, limits: Limits) -> CheckedBatch:
    """Every rule, every violation named."""
    checks = Checks(now_ms, limits)
    checks.user_id("user_id", msg.user_id)
    checks.text("broker_name", msg.broker_name)
    checks.account_number("account_number", msg.account_number, required=False)
    checks.timestamp("batch_timestamp", msg.batch_timestamp)
    checks.non_negative("sequence", msg.sequence)
    if len(msg.prices) > limits.max_quotes_per_batch:
        # Checked before touching the quotes: a flood must not cost a full scan.
        checks.add("prices", f"{len(msg.prices)} quotes, more than the "
                             f"{limits.max_quotes_per_batch} allowed per batch")
    checks.raise_if_any("ClientPriceStream")

    kept, rejected = check_entries(
        checks, msg.prices, path="prices", what="quote", check=_check_quote, build=_quote,
        key=lambda q: q.symbol, age=lambda q: q.time_ms)
    batch = PriceBatch(
        user_id=msg.user_id, broker_name=msg.broker_name, account_number=msg.account_number,
        sent_at_ms=msg.batch_timestamp, sequence=msg.sequence, quotes=kept)
    return CheckedBatch(batch, rejected)


def _check_quote(checks: Checks, price: ClientPrice) -> None:
    checks.symbol("symbol", price.symbol)
    checks.price("bid", price.bid)
    checks.price("ask", price.ask)
    checks.bid_ask(price.bid, price.ask)
    checks.non_negative("spread", price.spread)
    checks.timestamp("timestamp", price.timestamp)
    checks.in_range("digits", price.digits, 0, 10)
    checks.text("broker_symbol", price.broker_symbol)
    checks.text("broker_server", price.broker_server)


def _quote(price: ClientPrice) -> Quote:
    return Quote(
        symbol=price.symbol, bid=price.bid, ask=price.ask, time_ms=price.timestamp,
        spread_points=price.spread, broker_symbol=price.broker_symbol, digits=price.digits,
        broker_server=price.broker_server)

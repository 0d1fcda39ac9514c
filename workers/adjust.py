"""The pure core of the adjustment worker: one universal signal plus one user's state in,
that user's broker-adjusted TradingCommand(s) or a counted skip out (SPEC §5, §5b).

No I/O and no clock: ``now_ms`` is passed in, so the same inputs always give the same
output, command ids included (a redelivered signal is deduplicated by JetStream).

Prices are computed in ``Decimal`` from the shortest repr of each float, so 1.08512 -
0.00500 is exactly 1.08012 and a level exactly half a point off the grid rounds away
from zero, as traders expect, instead of wherever float noise puts it.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal

from mt5fleet.proto import ids
from mt5fleet.proto.domain import Command, CommandType, OrderType, Quote, Signal, SymbolSpecInfo
from mt5fleet.proto.sessions import MarketState, market_state
from mt5fleet.proto.v1.commands_pb2 import TradingCommand
from mt5fleet.workers.policy import UserState
from mt5fleet.workers.sizing import lot_size

DEFAULT_COMMAND_TTL_MS = 60_000


class SkipReason(enum.StrEnum):
    """Why a user got no command for a signal. The values are Prometheus labels: never rename one."""

    EXPIRED_SIGNAL = "expired_signal"
    SIGNAL_TOO_OLD = "signal_too_old"
    SYMBOL_NOT_TRADED = "symbol_not_traded"
    PAUSED = "paused"
    CLOSE_ONLY = "close_only"
    STOPPED_OUT = "stopped_out"
    MARKET_CLOSED = "market_closed"
    ROLLOVER = "rollover"
    NO_QUOTE = "no_quote"
    STALE_QUOTE = "stale_quote"
    WIDE_SPREAD = "wide_spread"
    NO_SPEC = "no_spec"
    NO_ACCOUNT = "no_account"
    LOT_BELOW_MINIMUM = "lot_below_minimum"
    NO_POSITION = "no_position"
    INVALID_LEVELS = "invalid_levels"


@dataclass(frozen=True, slots=True)
class Skip:
    reason: SkipReason
    detail: str             # plain words, with the numbers that decided it


@dataclass(frozen=True, slots=True)
class Adjusted:
    """The commands to publish (several when a CLOSE/MODIFY fans out over positions)."""

    commands: tuple[TradingCommand, ...]
    notes: tuple[str, ...] = ()


Result = Adjusted | Skip
Gate = Callable[[Signal, UserState, int], Skip | None]


def adjust(signal: Signal, user: UserState, now_ms: int, *,
           command_ttl_ms: int = DEFAULT_COMMAND_TTL_MS) -> Result:
    if command_ttl_ms <= 0:
        raise ValueError(f"command_ttl_ms must be positive, got {command_ttl_ms}")
    gates, build = _PLANS[signal.action]
    for gate in gates:
        skip = gate(signal, user, now_ms)
        if skip is not None:
            return skip
    return build(signal, user, now_ms, min(signal.expires_at_ms, now_ms + command_ttl_ms))


# ------------------------------------------------------------------------ eligibility
# Each gate returns a Skip or None; a plan runs them in order and the first skip wins,
# cheapest and plainest first (a paused user is told "paused", not "no quote").


def _expired(signal: Signal, user: UserState, now: int) -> Skip | None:
    if signal.is_expired(now):
        return Skip(SkipReason.EXPIRED_SIGNAL, f"signal expired at {signal.expires_at_ms}, now is {now}")
    return None


def _too_old(signal: Signal, user: UserState, now: int) -> Skip | None:
    cap, age = user.policy.max_signal_age_ms, now - signal.created_at_ms
    if cap and age > cap:
        return Skip(SkipReason.SIGNAL_TOO_OLD, f"signal is {age} ms old, the user's maximum is {cap} ms")
    return None


def _paused(signal: Signal, user: UserState, now: int) -> Skip | None:
    return Skip(SkipReason.PAUSED, "the user is paused: no new positions") if user.policy.paused else None


def _stopped_out(signal: Signal, user: UserState, now: int) -> Skip | None:
    if user.stopped_out:
        return Skip(SkipReason.STOPPED_OUT, "the user is stopped out (daily drawdown): no new positions")
    return None


def _close_only(signal: Signal, user: UserState, now: int) -> Skip | None:
    if user.policy.close_only:
        return Skip(SkipReason.CLOSE_ONLY, "the user is in close-only mode: no new positions")
    return None


def _not_traded(signal: Signal, user: UserState, now: int) -> Skip | None:
    if not user.policy.may_trade(signal.symbol):
        traded = ", ".join(sorted(user.policy.trading_symbols)) or "none"
        return Skip(SkipReason.SYMBOL_NOT_TRADED, f"{signal.symbol} is not in the user's trading set ({traded})")
    return None


@functools.lru_cache(maxsize=16)
def _market(now_ms: int) -> MarketState:
    # Every user of a signal is adjusted at the same now_ms: compute the session once.
    return market_state(now_ms)


def _market_closed(signal: Signal, user: UserState, now: int) -> Skip | None:
    state = _market(now)
    if not state.is_open:
        return Skip(SkipReason.MARKET_CLOSED, f"the FX market is closed (Friday 17:00 to Sunday 17:00 New York); "
                                              f"it opens at {state.next_open_ms}")
    return None


def _rollover(signal: Signal, user: UserState, now: int) -> Skip | None:
    if _market(now).in_rollover:
        return Skip(SkipReason.ROLLOVER, "inside the 17:00 New York rollover window: no new positions")
    return None


def _no_quote(signal: Signal, user: UserState, now: int) -> Skip | None:
    if signal.symbol not in user.quotes:
        return Skip(SkipReason.NO_QUOTE, f"no broker quote of {signal.symbol} from the user")
    return None


def _stale_quote(signal: Signal, user: UserState, now: int) -> Skip | None:
    quote, cap = user.quotes[signal.symbol], user.policy.max_quote_age_ms
    if now - quote.time_ms > cap:
        return Skip(SkipReason.STALE_QUOTE, f"the latest {signal.symbol} quote is {now - quote.time_ms} ms old, "
                                            f"the maximum is {cap} ms")
    return None


def _wide_spread(signal: Signal, user: UserState, now: int) -> Skip | None:
    cap = user.policy.max_spread_points
    if not cap:
        return None
    spread = spread_points(user.quotes[signal.symbol], user.specs.get(signal.symbol))
    if spread > cap:
        return Skip(SkipReason.WIDE_SPREAD, f"{signal.symbol} spread is {spread:g} points, the maximum is {cap:g}")
    return None


def _no_spec(signal: Signal, user: UserState, now: int) -> Skip | None:
    if signal.symbol not in user.specs:
        return Skip(SkipReason.NO_SPEC, f"no symbol specification of {signal.symbol} from the user's broker")
    return None


def _no_account(signal: Signal, user: UserState, now: int) -> Skip | None:
    mode = user.policy.sizing_mode
    if mode.needs_account and user.account is None:
        return Skip(SkipReason.NO_ACCOUNT, f"{mode.name} sizing needs the account's equity/balance, none reported")
    return None


def _no_position(signal: Signal, user: UserState, now: int) -> Skip | None:
    if not user.positions_by_signal.get(signal.target_signal_id or ""):
        return Skip(SkipReason.NO_POSITION, f"the user holds no position from signal {signal.target_signal_id}")
    return None


def spread_points(quote: Quote, spec: SymbolSpecInfo | None) -> float:
    """Ask minus bid in points of the spec's digits, else the quote's; else the broker's own figure."""
    digits = spec.digits if spec is not None else quote.digits or None
    if digits is None:
        return quote.spread_points
    return float((_d(quote.ask) - _d(quote.bid)).scaleb(digits))


# ----------------------------------------------------------------------------- prices


def _d(price: float) -> Decimal:
    return Decimal(repr(price))


@dataclass(frozen=True, slots=True)
class Grid:
    """The symbol's price grid: ``digits`` decimals, one point = 10^-digits."""

    digits: int

    @property
    def point(self) -> Decimal:
        return Decimal(1).scaleb(-self.digits)

    def round(self, price: Decimal) -> Decimal:
        return price.quantize(self.point, rounding=ROUND_HALF_UP)

    def points(self, distance: Decimal) -> Decimal:
        return distance.scaleb(self.digits)

    def show(self, price: Decimal | float) -> str:
        return format(Decimal(repr(price)) if isinstance(price, float) else price, f".{self.digits}f")


@dataclass(frozen=True, slots=True)
class Levels:
    entry: Decimal
    original_entry: Decimal
    stop_loss: Decimal | None
    take_profit: Decimal | None
    reason: str


def _shifted_levels(signal: Signal, quote: Quote, grid: Grid) -> Levels:
    """Entry and SL/TP for this user: market orders at the user's price, pending entries
    shifted by the broker-vs-reference differential; SL/TP keep their distances."""
    kind, buy = signal.order_type, signal.order_type.is_buy
    side = "ask" if buy else "bid"
    user_side, ref_side = _d(quote.ask if buy else quote.bid), _d(signal.reference_price)
    ref_entry = _d(signal.entry) if signal.entry is not None else ref_side
    diff = user_side - ref_side
    market = kind.is_market and signal.action is CommandType.OPEN_POSITION
    entry = grid.round(user_side if market else ref_entry + diff)
    sl = None if signal.stop_loss is None else grid.round(entry + _d(signal.stop_loss) - ref_entry)
    tp = None if signal.take_profit is None else grid.round(entry + _d(signal.take_profit) - ref_entry)
    ref_label = f"reference entry {grid.show(ref_entry)}" if signal.entry is not None else \
        f"reference {side} {grid.show(ref_side)}"
    shift = f"broker {side} {grid.show(user_side)} vs reference {side} {grid.show(ref_side)}"
    if market:
        how = f"market {kind.name} at broker {side} {grid.show(entry)} vs {ref_label}"
    elif signal.action is CommandType.OPEN_POSITION:
        how = f"{kind.name} entry {grid.show(entry)} = {ref_label} shifted by {shift}"
    else:
        how = f"modify {kind.name}: levels shifted by {shift}"
    kept = "/".join(_distance(grid, ref_entry, level, name) for level, name in
                    ((signal.stop_loss, "no SL"), (signal.take_profit, "no TP")))
    reason = f"{how} ({grid.points(entry - ref_entry):+.1f} points); SL/TP distances kept ({kept} points)"
    return Levels(entry, ref_entry, sl, tp, reason)


def _distance(grid: Grid, entry: Decimal, level: float | None, missing: str) -> str:
    return missing if level is None else f"{abs(grid.points(_d(level) - entry)):.1f}"


def _keep_out(levels: Levels, *, buy: bool, base: Decimal, base_name: str, grid: Grid, stops_level: int) -> Levels:
    """SL/TP at least ``stops_level`` points from ``base`` on their correct side, as MT5
    checks them; a level closer is pushed out to stops_level + 1 points, and the reason
    says so. (With no stops level a level must still lie strictly on its side.)"""
    out = stops_level + 1
    notes = []
    sl, tp = levels.stop_loss, levels.take_profit
    # A buy's SL lies below the base and its TP above; a sell is the mirror.
    sl_sign, tp_sign = (-1, 1) if buy else (1, -1)
    if sl is not None and not _far_enough(sl, base, sl_sign, grid, stops_level):
        sl = grid.round(base + sl_sign * out * grid.point)
        notes.append(f"SL pushed out to {grid.show(sl)}, {out} points from {base_name} {grid.show(base)}")
    if tp is not None and not _far_enough(tp, base, tp_sign, grid, stops_level):
        tp = grid.round(base + tp_sign * out * grid.point)
        notes.append(f"TP pushed out to {grid.show(tp)}, {out} points from {base_name} {grid.show(base)}")
    if not notes:
        return levels
    reason = f"{levels.reason}; {'; '.join(notes)} (broker stops level {stops_level} points)"
    return replace(levels, stop_loss=sl, take_profit=tp, reason=reason)


def _far_enough(level: Decimal, base: Decimal, sign: int, grid: Grid, stops_level: int) -> bool:
    distance = grid.points((level - base) * sign)
    return distance > 0 and distance >= stops_level


def _pending_problem(kind: OrderType, entry: Decimal, quote: Quote, grid: Grid, stops_level: int) -> str | None:
    """Why MT5 would refuse this pending entry against the current price, if it would:
    limits wait below the ask (buy) / above the bid (sell), stops the other way round."""
    buy = kind.is_buy
    price = _d(quote.ask if buy else quote.bid)
    below = kind in (OrderType.BUY_LIMIT, OrderType.SELL_STOP)
    if _far_enough(entry, price, -1 if below else 1, grid, stops_level):
        return None
    where = "below" if below else "above"
    return (f"{kind.name} entry {grid.show(entry)} must lie {where} the {'ask' if buy else 'bid'} "
            f"{grid.show(price)} by at least {max(stops_level, 1)} points (broker stops level {stops_level})")


def _guarded_levels(signal: Signal, quote: Quote, spec: SymbolSpecInfo) -> Levels | Skip:
    """Shifted levels kept valid for MT5: a pending entry must clear the stops level (else
    the order is pointless: skip); SL/TP are pushed out of it."""
    grid, kind, buy = Grid(spec.digits), signal.order_type, signal.order_type.is_buy
    levels = _shifted_levels(signal, quote, grid)
    if kind.is_pending and (signal.action is CommandType.OPEN_POSITION or signal.entry is not None):
        problem = _pending_problem(kind, levels.entry, quote, grid, spec.stops_level)
        if problem is not None:
            return Skip(SkipReason.INVALID_LEVELS, problem)
    if kind.is_pending and signal.action is CommandType.OPEN_POSITION:
        base, name = levels.entry, "the entry"   # MT5 checks a pending order's SL/TP against its price
    else:
        # Market orders and open positions: against the price that would close them.
        base, name = (_d(quote.bid), "bid") if buy else (_d(quote.ask), "ask")
    return _keep_out(levels, buy=buy, base=base, base_name=name, grid=grid, stops_level=spec.stops_level)


# --------------------------------------------------------------------------- commands


def _base_command(signal: Signal, user: UserState, now: int, expires: int, **fields: object) -> Command:
    quote = user.quotes.get(signal.symbol)
    common: dict[str, object] = dict(
        user_id=user.user_id, symbol=signal.symbol, order_type=signal.order_type, created_at_ms=now,
        expires_at_ms=expires, confidence=signal.confidence, reason=signal.reason or signal.strategy,
        max_deviation_points=user.policy.max_deviation_points, signal_id=signal.signal_id,
        signal_created_at_ms=signal.created_at_ms, reference_price=signal.reference_price,
        lot_size=0.0, entry_price=None, stop_loss=None, take_profit=None)
    if quote is not None:
        common.update(quote_bid=quote.bid, quote_ask=quote.ask, quote_time_ms=quote.time_ms)
    common.update(fields)
    return Command(**common)  # type: ignore[arg-type]


def _float(price: Decimal | None) -> float | None:
    return None if price is None else float(price)


def _priced(levels: Levels) -> dict[str, object]:
    return dict(entry_price=float(levels.entry), stop_loss=_float(levels.stop_loss),
                take_profit=_float(levels.take_profit), original_entry=float(levels.original_entry),
                price_adjustment=float(levels.entry - levels.original_entry), adjustment_reason=levels.reason)


def _build_open(signal: Signal, user: UserState, now: int, expires: int) -> Result:
    quote, spec = user.quotes[signal.symbol], user.specs[signal.symbol]
    levels = _guarded_levels(signal, quote, spec)
    if isinstance(levels, Skip):
        return levels
    sizing = lot_size(user.policy, spec, entry=float(levels.entry), stop_loss=_float(levels.stop_loss),
                      account=user.account,
                      quotes=user.quotes)
    if sizing.lots is None:
        return Skip(SkipReason.LOT_BELOW_MINIMUM, sizing.detail)
    command = _base_command(signal, user, now, expires, type=CommandType.OPEN_POSITION, lot_size=sizing.lots,
                            command_id=ids.command_id_for(signal.signal_id, user.user_id, "open"),
                            **_priced(levels))
    return Adjusted((to_proto(command),), (sizing.detail,))


def _positions(signal: Signal, user: UserState) -> list[tuple[str, int]]:
    """The user's positions from the target signal, each ticket once, in report order."""
    first: dict[int, tuple[str, int]] = {}
    for opened_by, ticket in user.positions_by_signal.get(signal.target_signal_id or "", ()):
        first.setdefault(ticket, (opened_by, ticket))
    return list(first.values())


def _build_modify(signal: Signal, user: UserState, now: int, expires: int) -> Result:
    if signal.stop_loss is None and signal.take_profit is None and not (
            signal.order_type.is_pending and signal.entry is not None):
        return Skip(SkipReason.INVALID_LEVELS, "the MODIFY signal sets neither SL nor TP nor a pending entry")
    levels = _guarded_levels(signal, user.quotes[signal.symbol], user.specs[signal.symbol])
    if isinstance(levels, Skip):
        return levels
    commands = tuple(to_proto(_base_command(
        signal, user, now, expires, type=CommandType.MODIFY_POSITION, position_ticket=ticket,
        target_command_id=opened_by, command_id=ids.command_id_for(signal.signal_id, user.user_id,
                                                                   f"modify:{ticket}"),
        **_priced(levels))) for opened_by, ticket in _positions(signal, user))
    return Adjusted(commands, (levels.reason,))


def _build_close(signal: Signal, user: UserState, now: int, expires: int) -> Result:
    commands, notes = [], []
    for opened_by, ticket in _positions(signal, user):
        lots, why = close_lots(signal.close_fraction, user.position_volumes.get(ticket),
                               user.specs.get(signal.symbol), ticket)
        notes.append(why)
        commands.append(to_proto(_base_command(
            signal, user, now, expires, type=CommandType.CLOSE_POSITION, lot_size=lots, position_ticket=ticket,
            target_command_id=opened_by, adjustment_reason=why,
            command_id=ids.command_id_for(signal.signal_id, user.user_id, f"close:{ticket}"))))
    return Adjusted(tuple(commands), tuple(notes))


def close_lots(fraction: float, volume: float | None, spec: SymbolSpecInfo | None, ticket: int) -> tuple[float, str]:
    """Lots to close of one position; 0 means all of it (the agent's convention)."""
    if fraction <= 0 or fraction >= 1:
        return 0.0, f"close all of position {ticket}"
    if volume is None or volume <= 0:
        return 0.0, f"close {fraction:.0%} asked, but the volume of position {ticket} is unknown: close all of it"
    lots = fraction * volume
    if spec is not None:
        # To the nearest step, and never 0: a 0-lot CLOSE would close everything.
        step = _d(spec.volume_step)
        lots = max(float((_d(lots) / step).quantize(Decimal(1), rounding=ROUND_HALF_UP) * step), spec.volume_min)
    else:
        lots = round(lots, 8)
    if lots >= volume:
        return 0.0, f"close {fraction:.0%} of position {ticket} ({volume:g} lots) rounds to all of it"
    return lots, f"close {fraction:.0%} of position {ticket}: {lots:g} of {volume:g} lots"


def _build_close_all(signal: Signal, user: UserState, now: int, expires: int) -> Result:
    symbol = signal.symbol or None
    why = f"close every position of {symbol}" if symbol else "close every position"
    command = _base_command(signal, user, now, expires, type=CommandType.CLOSE_ALL, symbol=symbol,
                            adjustment_reason=why,
                            command_id=ids.command_id_for(signal.signal_id, user.user_id, "close_all"))
    return Adjusted((to_proto(command),), (why,))


# Risk-reducing actions pass paused, close-only, stopped-out users and symbols outside the
# trading set (refusing a close keeps the trader exposed); a closed market still stops them.
_SIGNAL_GATES: tuple[Gate, ...] = (_expired, _too_old)
_PLANS: dict[CommandType, tuple[tuple[Gate, ...], Callable[[Signal, UserState, int, int], Result]]] = {
    CommandType.OPEN_POSITION: ((*_SIGNAL_GATES, _paused, _stopped_out, _close_only, _not_traded, _market_closed,
                                 _rollover, _no_quote, _stale_quote, _wide_spread, _no_spec, _no_account),
                                _build_open),
    CommandType.CLOSE_POSITION: ((*_SIGNAL_GATES, _no_position, _market_closed), _build_close),
    CommandType.MODIFY_POSITION: ((*_SIGNAL_GATES, _no_position, _market_closed, _no_quote, _stale_quote,
                                   _no_spec), _build_modify),
    CommandType.CLOSE_ALL: ((*_SIGNAL_GATES, _market_closed), _build_close_all),
}


def to_proto(command: Command) -> TradingCommand:
    """The wire form of a command: None becomes the field's "none" value (0 or empty)."""
    return TradingCommand(
        command_id=command.command_id, user_id=command.user_id, type=int(command.type),
        symbol=command.symbol or "", order_type=int(command.order_type), lot_size=command.lot_size,
        entry_price=command.entry_price or 0.0, stop_loss=command.stop_loss or 0.0,
        take_profit=command.take_profit or 0.0, reason=command.reason, confidence_score=command.confidence,
        expires_at=command.expires_at_ms, original_entry=command.original_entry or 0.0,
        price_adjustment=command.price_adjustment, adjustment_reason=command.adjustment_reason,
        position_ticket=command.position_ticket or 0, target_command_id=command.target_command_id or "",
        max_deviation_points=command.max_deviation_points, created_at=command.created_at_ms,
        signal_id=command.signal_id or "", signal_created_at=command.signal_created_at_ms or 0,
        reference_price=command.reference_price or 0.0, quote_bid=command.quote_bid or 0.0,
        quote_ask=command.quote_ask or 0.0, quote_time=command.quote_time_ms or 0)

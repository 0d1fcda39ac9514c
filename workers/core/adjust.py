"""The pure core of the adjustment worker: one universal signal plus one user's state in,
that user's broker-adjusted Command(s) or a counted skip out (SPEC §5, §5b). The commands
are domain values; ``mt5fleet.workers.adapters.wire`` turns them into TradingCommands.

No I/O and no clock: ``now_ms`` is passed in, so the same inputs always give the same
output, command ids included (a redelivered signal is deduplicated by JetStream).

Prices are computed in ``Decimal`` from the shortest repr of each float, so 1.08512 -
0.00500 is exactly 1.08012 and a level exactly half a tick off the grid rounds away
from zero, as traders expect, instead of wherever float noise puts it. The grid is the
symbol's tick size as well as its digits: a CFD quoted to 0.01 that trades in 0.25 ticks
gets levels on the 0.25 grid, the only ones its broker accepts.

Every command carries ``original_entry``, the reference-feed price it is measured against:
an opening or modifying command's reference entry; a close's reference price on the side
the close trades at (the bid closes a buy, the ask a sell), also its ``reference_price``,
so the agent's slippage against the reference compares like with like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from mt5fleet.proto.domain import ids
from mt5fleet.proto.domain.evolve import evolve
from mt5fleet.proto.domain.market import Quote, SymbolSpecInfo
from mt5fleet.proto.domain.trading import Command, CommandType, OrderType, Signal
from mt5fleet.workers.core.policy import Skip, SkipReason, UserState, first_skip
from mt5fleet.workers.core.sizing import close_lots, lot_size
from mt5fleet.workers.core.sizing_inputs import SizingInputs

# Skip and SkipReason live with the eligibility gates in ``policy``; callers import them here.
__all__ = ["DEFAULT_COMMAND_TTL_MS", "Adjusted", "Result", "Skip", "SkipReason", "adjust", "close_command_id"]

DEFAULT_COMMAND_TTL_MS = 60_000


@dataclass(frozen=True, slots=True)
class Adjusted:
    """The commands to publish (several when a CLOSE/MODIFY fans out over positions), and
    for an OPEN what its lot size was computed from."""

    commands: tuple[Command, ...]
    notes: tuple[str, ...] = ()
    sizing: SizingInputs | None = None


Result = Adjusted | Skip


def adjust(signal: Signal, user: UserState, now_ms: int, *,
           command_ttl_ms: int = DEFAULT_COMMAND_TTL_MS) -> Result:
    """This user's command(s) for ``signal`` at ``now_ms``, or why there are none.

    A command expires with the signal or ``command_ttl_ms`` after it was built, whichever
    comes first: an agent back from an outage must not act on a price from long ago.
    """
    if command_ttl_ms <= 0:
        raise ValueError(f"command_ttl_ms must be positive, got {command_ttl_ms}")
    skip = first_skip(signal, user, now_ms)
    if skip is not None:
        return skip
    return _BUILDERS[signal.action](signal, user, now_ms, min(signal.expires_at_ms, now_ms + command_ttl_ms))


# ----------------------------------------------------------------------------- prices


def _d(price: float) -> Decimal:
    return Decimal(repr(price))


@dataclass(frozen=True, slots=True)
class Grid:
    """The symbol's price grid: ``digits`` decimals (one point = 10^-digits) and, when the
    broker trades in coarser steps than a point, its tick size (``None``: every point)."""

    digits: int
    tick: Decimal | None = None

    @classmethod
    def of(cls, spec: SymbolSpecInfo) -> Grid:
        point, tick = Decimal(1).scaleb(-spec.digits), _d(spec.tick_size)
        return cls(spec.digits, tick if tick > point else None)

    @property
    def point(self) -> Decimal:
        return Decimal(1).scaleb(-self.digits)

    def round(self, price: Decimal) -> Decimal:
        """The nearest level on the grid, half a tick rounding away from zero."""
        return self._on_grid(price, ROUND_HALF_UP)

    def round_beyond(self, price: Decimal, sign: int) -> Decimal:
        """The first level on the grid at or beyond ``price`` in direction ``sign``."""
        return self._on_grid(price, ROUND_CEILING if sign > 0 else ROUND_FLOOR)

    def _on_grid(self, price: Decimal, rounding: str) -> Decimal:
        step = self.tick or self.point
        return ((price / step).to_integral_value(rounding=rounding) * step).quantize(self.point)

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
    reason = f"{how} ({grid.points(entry - ref_entry):+.1f} points); {_kept(grid, ref_entry, signal)}"
    return Levels(entry, ref_entry, sl, tp, reason)


def _kept(grid: Grid, ref_entry: Decimal, signal: Signal) -> str:
    """'SL/TP distances kept (500.0/1000.0 points)', or what there is of it."""
    named = [(name, abs(grid.points(_d(level) - ref_entry))) for name, level in
             (("SL", signal.stop_loss), ("TP", signal.take_profit)) if level is not None]
    if not named:
        return "no SL/TP"
    names, points = "/".join(n for n, _ in named), "/".join(f"{p:.1f}" for _, p in named)
    missing = "" if len(named) == 2 else f", no {'TP' if named[0][0] == 'SL' else 'SL'}"
    return f"{names} distance{'s' if len(named) == 2 else ''} kept ({points} points){missing}"


@dataclass(frozen=True, slots=True)
class Fence:
    """A price a level must lie strictly beyond, by at least ``min_points``."""

    base: Decimal
    name: str
    min_points: int


def _keep_out(levels: Levels, *, buy: bool, fences: tuple[Fence, ...], grid: Grid, stops_level: int) -> Levels:
    """SL/TP beyond every fence on their correct side; a level that is not is pushed out
    to the farthest fence + 1 point, and the reason says so."""
    notes: list[str] = []
    # A buy's SL lies below the fences and its TP above; a sell is the mirror.
    sl = _fenced("SL", levels.stop_loss, -1 if buy else 1, fences, grid, notes)
    tp = _fenced("TP", levels.take_profit, 1 if buy else -1, fences, grid, notes)
    if not notes:
        return levels
    reason = f"{levels.reason}; {'; '.join(notes)} (broker stops level {stops_level} points)"
    return evolve(levels, stop_loss=sl, take_profit=tp, reason=reason)


def _fenced(name: str, level: Decimal | None, sign: int, fences: tuple[Fence, ...], grid: Grid,
            notes: list[str]) -> Decimal | None:
    if level is None or all(_far_enough(level, f.base, sign, grid, f.min_points) for f in fences):
        return level
    # Rounded outwards: a tick grid must not pull the level back inside the fence.
    pushed = [(grid.round_beyond(f.base + sign * (f.min_points + 1) * grid.point, sign), f) for f in fences]
    target, fence = max(pushed, key=lambda item: item[0] * sign)
    out = float(grid.points((target - fence.base) * sign))
    notes.append(f"{name} pushed out to {grid.show(target)}, {out:g} point{'s' if out != 1 else ''} from {fence.name}")
    return target


def _far_enough(level: Decimal, base: Decimal, sign: int, grid: Grid, min_points: int) -> bool:
    """``level`` lies strictly beyond ``base`` in direction ``sign``, by ``min_points`` or more."""
    distance = grid.points((level - base) * sign)
    return distance > 0 and distance >= min_points


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
    grid, kind, buy = Grid.of(spec), signal.order_type, signal.order_type.is_buy
    levels = _shifted_levels(signal, quote, grid)
    if kind.is_pending and (signal.action is CommandType.OPEN_POSITION or signal.entry is not None):
        problem = _pending_problem(kind, levels.entry, quote, grid, spec.stops_level)
        if problem is not None:
            return Skip(SkipReason.INVALID_LEVELS, problem)
    stops, entry = spec.stops_level, Fence(levels.entry, f"the entry {grid.show(levels.entry)}", 0)
    if kind.is_pending and signal.action is CommandType.OPEN_POSITION:
        # MT5 checks a pending order's SL/TP against its price.
        fences: tuple[Fence, ...] = (evolve(entry, min_points=stops),)
    else:
        # Market orders and open positions: against the price that would close them, as
        # MT5 does. A new market position's levels must also lie beyond its entry: with a
        # spread wider than the stops level, a TP just above the bid is still below the ask.
        close = _d(quote.bid) if buy else _d(quote.ask)
        fences = (Fence(close, f"{'bid' if buy else 'ask'} {grid.show(close)}", stops),)
        if signal.action is CommandType.OPEN_POSITION:
            fences += (entry,)
    return _keep_out(levels, buy=buy, fences=fences, grid=grid, stops_level=stops)


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
    # Sized on the final levels: a pushed-out SL is a longer risk distance, hence fewer lots.
    sizing = lot_size(user.policy, spec, entry=float(levels.entry), stop_loss=_float(levels.stop_loss),
                      account=user.account, quotes=user.quotes, now_ms=now,
                      move_allowance=_move_allowance(signal, user, spec))
    if isinstance(sizing, Skip):
        return sizing
    if sizing.lots is None:
        return Skip(SkipReason.LOT_BELOW_MINIMUM, sizing.detail, sizing.inputs)
    command = _base_command(signal, user, now, expires, type=CommandType.OPEN_POSITION, lot_size=sizing.lots,
                            command_id=ids.command_id_for(signal.signal_id, user.user_id, "open"),
                            sizing_reason=sizing.detail, **_priced(levels))
    return Adjusted((command,), (sizing.detail,), sizing.inputs)


def _move_allowance(signal: Signal, user: UserState, spec: SymbolSpecInfo) -> float:
    """How far (price units) a market order may move before the agent sends it and still be
    within the user's risk limit there: the user's max deviation (``proto.domain.risk``).
    A pending order is checked at its own entry, which does not move."""
    return user.policy.max_deviation_points * spec.point if signal.order_type.is_market else 0.0


def _closing_reference(signal: Signal) -> dict[str, object]:
    """A close trades at the reference bid when it closes a buy (the signal's order type
    names the positions' direction), at the ask when it closes a sell."""
    price = signal.reference_bid if signal.order_type.is_buy else signal.reference_ask
    return dict(original_entry=price, reference_price=price)


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
    commands = tuple(_base_command(
        signal, user, now, expires, type=CommandType.MODIFY_POSITION, position_ticket=ticket,
        target_command_id=opened_by, command_id=ids.command_id_for(signal.signal_id, user.user_id,
                                                                   f"modify:{ticket}"),
        **_priced(levels)) for opened_by, ticket in _positions(signal, user))
    return Adjusted(commands, (levels.reason,))


def _build_close(signal: Signal, user: UserState, now: int, expires: int) -> Result:
    commands, notes = [], []
    for opened_by, ticket in _positions(signal, user):
        lots, why = close_lots(signal.close_fraction, user.position_volumes.get(ticket),
                               user.specs.get(signal.symbol), ticket)
        notes.append(why)
        commands.append(_base_command(
            signal, user, now, expires, type=CommandType.CLOSE_POSITION, lot_size=lots, position_ticket=ticket,
            target_command_id=opened_by, adjustment_reason=why, sizing_reason=why, **_closing_reference(signal),
            command_id=close_command_id(signal.signal_id, user.user_id, ticket)))
    return Adjusted(tuple(commands), tuple(notes))


def close_command_id(signal_id: str, user_id: str, ticket: int) -> str:
    """The id of the command closing (part of) ``ticket`` for a CLOSE signal. The position
    index recomputes it to match a close report that names no ticket (netting accounts)."""
    return ids.command_id_for(signal_id, user_id, f"close:{ticket}")


def _build_close_all(signal: Signal, user: UserState, now: int, expires: int) -> Result:
    symbol = signal.symbol or None
    why = f"close every position of {symbol}" if symbol else "close every position"
    command = _base_command(signal, user, now, expires, type=CommandType.CLOSE_ALL, symbol=symbol,
                            adjustment_reason=why, **_closing_reference(signal),
                            command_id=ids.command_id_for(signal.signal_id, user.user_id, "close_all"))
    return Adjusted((command,), (why,))


_BUILDERS: dict[CommandType, Callable[[Signal, UserState, int, int], Result]] = {
    CommandType.OPEN_POSITION: _build_open,
    CommandType.CLOSE_POSITION: _build_close,
    CommandType.MODIFY_POSITION: _build_modify,
    CommandType.CLOSE_ALL: _build_close_all,
}

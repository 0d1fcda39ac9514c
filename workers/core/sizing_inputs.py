"""What a lot size was computed from, kept with the result so that "why did user X get 0.34
lots, or nothing, for signal S?" can be answered later (issue 11's decision record reads
it from ``Adjusted.sizing`` and ``Skip.sizing``). Plain values, no logic beyond naming.
"""

from __future__ import annotations

from dataclasses import dataclass

from mt5fleet.proto.domain.config import SizingMode


@dataclass(frozen=True, slots=True)
class Rate:
    """One currency conversion: ``value`` units of ``target`` per unit of ``source``.

    ``pair`` and ``side`` name the user's quote it came from ("USDJPY", "bid"); both are
    empty when no quote was needed (the same currency, or a cent account's fixed 1/100).
    """

    source: str
    target: str
    value: float
    how: str                        # for the notes, e.g. " / USDJPY bid 149.5"
    pair: str = ""
    side: str = ""
    quote_time_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SizingInputs:
    """Every figure one lot size was computed from; None where the mode does not use it.

    Money is in ``account_currency`` unless the name says USD. ``move_allowance`` is the
    price distance added to the stop distance of a market order (the user's max deviation,
    see ``mt5fleet.proto.domain.risk``); ``budget`` the money sized to, the limit less the
    headroom.
    """

    mode: SizingMode
    symbol: str
    account_currency: str = ""
    equity: float | None = None
    balance: float | None = None
    account_time_ms: int | None = None
    risk_pct: float | None = None
    risk_limit: float | None = None
    budget: float | None = None
    headroom: float = 0.0
    entry: float | None = None
    stop_loss: float | None = None
    move_allowance: float = 0.0
    tick_size: float | None = None
    tick_value: float | None = None
    tick_value_source: str = ""
    lots_per_thousand_usd: float | None = None
    money_usd: float | None = None
    preferred_lot: float | None = None
    conversions: tuple[Rate, ...] = ()
    conservative: bool = False
    raw_lots: float | None = None
    lots: float | None = None

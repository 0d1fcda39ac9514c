"""Position size of one OPEN command for one user: pure arithmetic, no I/O.

Order of operations (SPEC §5, §5b): the sizing mode gives a raw figure; conservative
mode halves it; the user's max lot, the broker's volume_max and the wire limit cap it;
it is rounded DOWN to the broker's volume step, so rounding never adds risk; below the
broker's volume_min there is no trade (``lots`` is None and the caller skips).

RISK_PERCENT: lots = equity x pct / 100 / (SL distance / tick_size x value of one tick
per lot in the account currency). The tick value is contract_size x tick_size in the
symbol's profit currency, converted through the user's own quotes. When a conversion
rate has a side to choose, the one giving the larger tick value is used (divide by the
bid, multiply by the ask): the computed risk is then never below what the trade risks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from mt5fleet.proto.domain.account import AccountSnapshot
from mt5fleet.proto.domain.config import SizingMode
from mt5fleet.proto.domain.market import Quote, SymbolSpecInfo
from mt5fleet.proto.validation_rules import DEFAULT_LIMITS
from mt5fleet.workers.core.policy import UserPolicy

# MT5 SYMBOL_CALC_MODE_FUTURES, _EXCH_FUTURES, _EXCH_FUTURES_FORTS: the tick's value is
# set by the exchange, not contract_size x tick_size, so the broker's tick_value is the truth.
FUTURES_CALC_MODES = frozenset({1, 33, 34})
MULTIPLIER_BASE = 1_000.0      # the multipliers give lots per 1,000 of balance/equity
# Float noise (0.2 computed as 0.19999999999999998) must not cost a whole volume step;
# a billionth of a step is far below anything a broker or the agent's check can see.
_STEP_TOLERANCE = Decimal("1e-9")


@dataclass(frozen=True, slots=True)
class Sizing:
    """The lot size, or None when it falls below the broker's minimum; ``detail`` says how."""

    lots: float | None
    detail: str


@dataclass(frozen=True, slots=True)
class TickValue:
    """Account money one tick_size move makes on one lot, and where the figure came from."""

    value: float
    source: str


def lot_size(policy: UserPolicy, spec: SymbolSpecInfo, *, entry: float, stop_loss: float | None,
             account: AccountSnapshot | None, quotes: Mapping[str, Quote]) -> Sizing:
    """Lots for an order at ``entry`` with ``stop_loss``; ``account`` is required by every
    mode but FIXED_LOT (``ValueError`` without it: the caller skips such users first)."""
    if policy.sizing_mode.needs_account and account is None:
        raise ValueError(f"{policy.sizing_mode.name} sizing needs the account of user {policy.user_id}")
    raw, how = _raw_lots(policy, spec, entry=entry, stop_loss=stop_loss, account=account, quotes=quotes)
    return fit_to_broker(raw, how, policy, spec)


def _raw_lots(policy: UserPolicy, spec: SymbolSpecInfo, *, entry: float, stop_loss: float | None,
              account: AccountSnapshot | None, quotes: Mapping[str, Quote]) -> tuple[float, str]:
    mode = policy.sizing_mode
    if mode is SizingMode.FIXED_LOT:
        return policy.preferred_lot_size, f"fixed lot {policy.preferred_lot_size:g}"
    assert account is not None  # checked by lot_size
    if mode is SizingMode.BALANCE_MULTIPLIER:
        return _per_thousand(policy.sizing_value, account.balance, "balance", account.currency)
    if mode is SizingMode.EQUITY_MULTIPLIER:
        return _per_thousand(policy.sizing_value, account.equity, "equity", account.currency)
    if stop_loss is None:
        return policy.preferred_lot_size, (f"no stop loss, so no risk distance to size by: preferred lot "
                                           f"{policy.preferred_lot_size:g}")
    return _risk_percent(policy.max_risk_per_trade_pct, spec, account, abs(entry - stop_loss), quotes)


def _per_thousand(lots_per_thousand: float, money: float, what: str, currency: str) -> tuple[float, str]:
    lots = lots_per_thousand * money / MULTIPLIER_BASE
    return lots, f"{lots_per_thousand:g} lots per 1,000 of {what} {money:.2f} {currency} = {lots:g} lots"


def _risk_percent(pct: float, spec: SymbolSpecInfo, account: AccountSnapshot, sl_distance: float,
                  quotes: Mapping[str, Quote]) -> tuple[float, str]:
    money = account.equity * pct / 100
    ticks = sl_distance / spec.tick_size
    tick = tick_value(spec, account.currency, quotes)
    loss_per_lot = ticks * tick.value
    lots = money / loss_per_lot if loss_per_lot > 0 else 0.0
    return lots, (f"risk {pct:g}% of equity {account.equity:.2f} = {money:.2f} {account.currency} over "
                  f"{ticks:.1f} ticks to the SL at {tick.value:.6g} {account.currency} per tick per lot "
                  f"({tick.source}) = {lots:.4f} lots")


def tick_value(spec: SymbolSpecInfo, account_currency: str, quotes: Mapping[str, Quote]) -> TickValue:
    """Value of one tick_size move of one lot in the account currency."""
    if spec.trade_calc_mode in FUTURES_CALC_MODES:
        return TickValue(spec.tick_value, "broker tick value, exchange-set for futures")
    profit = spec.currency_profit
    if not profit:
        return TickValue(spec.tick_value, "broker tick value, no profit currency in the spec")
    in_profit = spec.contract_size * spec.tick_size
    rate = conversion_rate(profit, account_currency, quotes)
    if rate is None:
        return TickValue(spec.tick_value, f"broker tick value, no {account_currency}{profit} or "
                                          f"{profit}{account_currency} quote to convert with")
    value, how = rate
    return TickValue(in_profit * value, f"{spec.contract_size:g} x {spec.tick_size:g} {profit}{how}")


def conversion_rate(source: str, target: str, quotes: Mapping[str, Quote]) -> tuple[float, str] | None:
    """How much ``target`` currency one unit of ``source`` is worth, from the user's quotes.

    Returns (rate, how) or None when neither the direct nor the inverse pair is quoted.
    The side taken makes the rate the higher of the two: see the module docstring.
    """
    if source == target:
        return 1.0, ""
    inverse = quotes.get(target + source)      # e.g. USDJPY for JPY -> USD: 1 USD = bid JPY
    if inverse is not None:
        return 1.0 / inverse.bid, f" / {target}{source} bid {inverse.bid:g}"
    direct = quotes.get(source + target)       # e.g. USDJPY for USD -> JPY: 1 USD = ask JPY
    if direct is not None:
        return direct.ask, f" x {source}{target} ask {direct.ask:g}"
    return None


def fit_to_broker(raw: float, how: str, policy: UserPolicy, spec: SymbolSpecInfo) -> Sizing:
    """Conservative halving, caps, rounding down to the step, the broker's minimum."""
    if math.isnan(raw):
        raise ValueError(f"lot size is not a number: {how}")
    steps = [how]
    lots = max(raw, 0.0)   # negative equity or balance: nothing to trade, not an error
    if policy.conservative_mode:
        lots /= 2
        steps.append(f"halved (conservative mode) to {lots:.4f}")
    cap, cap_name = max_lots(policy, spec)
    if lots > cap:
        lots = cap
        steps.append(f"capped at {cap_name} {cap:g}")
    # The cap is floored without tolerance: a cap off the step grid is never exceeded.
    fitted = min(floor_to_step(lots, spec.volume_step), floor_to_step(cap, spec.volume_step, tolerance=False))
    steps.append(f"rounded down to step {spec.volume_step:g}: {fitted:g} lots")
    if fitted < spec.volume_min or fitted <= 0:
        steps.append(f"below the broker's minimum {spec.volume_min:g}")
        return Sizing(None, "; ".join(steps))
    return Sizing(fitted, "; ".join(steps))


def max_lots(policy: UserPolicy, spec: SymbolSpecInfo) -> tuple[float, str]:
    """The tightest of the user's max lot, the broker's volume_max and the wire limit."""
    caps = [(spec.volume_max, "broker volume_max"), (DEFAULT_LIMITS.max_lot, "wire limit")]
    if policy.max_lot > 0:
        caps.append((policy.max_lot, "user max lot"))
    return min(caps)


def floor_to_step(lots: float, step: float, *, tolerance: bool = True) -> float:
    """The largest multiple of ``step`` not above ``lots`` (decimal arithmetic: 0.3 / 0.01
    is 29.999999999999996 in floats and would lose a step)."""
    if lots <= 0:
        return 0.0
    step_d = _dec(step)
    steps = _dec(lots) / step_d + (_STEP_TOLERANCE if tolerance else 0)
    return float(steps.to_integral_value(rounding=ROUND_FLOOR) * step_d)


def close_lots(fraction: float, volume: float | None, spec: SymbolSpecInfo | None, ticket: int) -> tuple[float, str]:
    """Lots to close of one position; 0 means all of it (the agent's convention).

    A partial close is ``fraction`` x the position's volume rounded DOWN to the broker's
    volume step (rounding never closes more than the signal asked), raised to volume_min
    (a 0-lot CLOSE would close everything, and the broker refuses less than its minimum).
    If what would stay open is below volume_min the broker could never close it on its
    own, so the whole position is closed instead. Without the volume or the spec no
    valid partial lot can be computed, and closing all is the side that reduces risk.
    """
    if fraction <= 0 or fraction >= 1:
        return 0.0, f"close all of position {ticket}"
    if volume is None or volume <= 0:
        return 0.0, f"close {fraction:.0%} asked, but the volume of position {ticket} is unknown: close all of it"
    if spec is None:
        return 0.0, (f"close {fraction:.0%} asked, but the broker's volume step is unknown: "
                     f"close all of position {ticket}")
    lots = max(floor_to_step(fraction * volume, spec.volume_step), spec.volume_min)
    remainder = _dec(volume) - _dec(lots)
    if remainder < _dec(spec.volume_min) * (1 - _STEP_TOLERANCE):
        return 0.0, (f"close {fraction:.0%} of position {ticket} ({volume:g} lots) would leave {float(remainder):g} "
                     f"lots, below the broker's minimum {spec.volume_min:g}: close all of it")
    return lots, f"close {fraction:.0%} of position {ticket}: {lots:g} of {volume:g} lots"


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))

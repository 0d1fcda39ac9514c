"""Position size of one OPEN command for one user: pure arithmetic, no I/O.

Order of operations (SPEC §5, §5b): the sizing mode gives a raw figure; conservative
mode halves it; the user's max lot, the broker's volume_max and the wire limit cap it;
it is rounded DOWN to the broker's volume step, so rounding never adds risk; below the
broker's volume_min there is no trade (``lots`` is None and the caller skips).

RISK_PERCENT: the lots whose money at risk, as ``mt5fleet.proto.domain.risk`` defines it
(the agent checks the order with the same definition), is the user's limit less the
sizing headroom, measured from the entry moved ``move_allowance`` away from the stop (for
a market order, the slippage the user accepts: see that module for why). The tick value is
contract_size x tick_size in the symbol's profit currency, converted through the user's own
quotes at the side giving the larger tick value (the computed risk is then never below what
the trade risks); without a quote to convert with, the broker's own tick value; with a
quote older than the user's max quote age, a skip. A signal without a stop loss has no
distance to size by and an unbounded risk the agent would refuse: a skip (``no_stop_loss``).

BALANCE/EQUITY_MULTIPLIER: ``sizing_value`` lots per 1,000 USD of the balance or equity.
The account's money is converted to USD first, so a cent account (USC, 1/100 USD) or a JPY
account gets the lots its money is worth, not 100 or 150 times them; without a fresh quote
to convert with, a skip (``no_conversion``, ``stale_conversion``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from mt5fleet.proto.domain.account import AccountSnapshot
from mt5fleet.proto.domain.config import SizingMode
from mt5fleet.proto.domain.evolve import evolve
from mt5fleet.proto.domain.market import Quote, SymbolSpecInfo
from mt5fleet.proto.domain.risk import SIZING_HEADROOM, lots_for, risk_limit, sizing_budget, worst_entry
from mt5fleet.proto.validation_rules import DEFAULT_LIMITS
from mt5fleet.workers.core.conversion import conversion_rate
from mt5fleet.workers.core.policy import Skip, SkipReason, UserPolicy
from mt5fleet.workers.core.sizing_inputs import Rate, SizingInputs

__all__ = ["FUTURES_CALC_MODES", "MULTIPLIER_BASE", "MULTIPLIER_CURRENCY", "Sizing", "TickValue", "close_lots",
           "conversion_rate", "fit_to_broker", "floor_to_step", "lot_size", "max_lots", "tick_value"]

# MT5 SYMBOL_CALC_MODE_FUTURES, _EXCH_FUTURES, _EXCH_FUTURES_FORTS: the tick's value is
# set by the exchange, not contract_size x tick_size, so the broker's tick_value is the truth.
FUTURES_CALC_MODES = frozenset({1, 33, 34})
MULTIPLIER_BASE = 1_000.0      # the multipliers give lots per 1,000 ...
MULTIPLIER_CURRENCY = "USD"    # ... US dollars of balance/equity, whatever the account's currency
# Float noise (0.2 computed as 0.19999999999999998) must not cost a whole volume step;
# a billionth of a step is far below anything a broker or the agent's check can see.
_STEP_TOLERANCE = Decimal("1e-9")


@dataclass(frozen=True, slots=True)
class Sizing:
    """The lot size, or None when it falls below the broker's minimum; ``detail`` says how
    and ``inputs`` holds the figures it came from."""

    lots: float | None
    detail: str
    inputs: SizingInputs | None = None


@dataclass(frozen=True, slots=True)
class TickValue:
    """Account money one tick_size move makes on one lot, and where the figure came from."""

    value: float
    source: str
    rate: Rate | None = None     # the conversion used, if any


# The figures gathered so far, as SizingInputs keywords. SizingInputs (23 fields, frozen) is
# built once, when the result is known: copying it at every step cost ~4 µs a copy, a
# tenth of a user's adjustment (bench/adjust_breakdown.py, issue 15).
_Fields = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Raw:
    lots: float
    how: str
    fields: _Fields


def lot_size(policy: UserPolicy, spec: SymbolSpecInfo, *, entry: float, stop_loss: float | None,
             account: AccountSnapshot | None, quotes: Mapping[str, Quote], now_ms: int,
             move_allowance: float = 0.0, headroom: float = SIZING_HEADROOM) -> Sizing | Skip:
    """Lots for an order at ``entry`` with ``stop_loss``, or why there are none to give.

    ``move_allowance`` (price units) is added to the stop distance of a risk-% order;
    ``account`` is required by every mode but FIXED_LOT (``ValueError`` without it: the
    caller skips such users first); ``now_ms`` dates the conversion quotes.
    """
    if policy.sizing_mode.needs_account and account is None:
        raise ValueError(f"{policy.sizing_mode.name} sizing needs the account of user {policy.user_id}")
    base = _base_fields(policy, spec, account, entry, stop_loss)
    if policy.sizing_mode is SizingMode.FIXED_LOT:
        base["preferred_lot"] = policy.preferred_lot_size
        raw: _Raw | Skip = _Raw(policy.preferred_lot_size, f"fixed lot {policy.preferred_lot_size:g}", base)
    else:
        assert account is not None  # checked above: every other mode reads the account
        raw = (_risk_percent(policy, spec, account, quotes, now_ms, base, move_allowance, headroom)
               if policy.sizing_mode is SizingMode.RISK_PERCENT else
               _per_thousand_usd(policy, account, quotes, now_ms, base))
    if isinstance(raw, Skip):
        return raw
    sizing = fit_to_broker(raw.lots, raw.how, policy, spec)
    inputs = SizingInputs(**raw.fields, raw_lots=raw.lots, lots=sizing.lots, conservative=policy.conservative_mode)
    return Sizing(sizing.lots, sizing.detail, inputs)


def _base_fields(policy: UserPolicy, spec: SymbolSpecInfo, account: AccountSnapshot | None, entry: float,
                 stop_loss: float | None) -> _Fields:
    fields: _Fields = dict(mode=policy.sizing_mode, symbol=spec.symbol, entry=entry, stop_loss=stop_loss,
                           tick_size=spec.tick_size)
    if account is not None:
        fields.update(account_currency=account.currency, equity=account.equity, balance=account.balance,
                      account_time_ms=account.time_ms)
    return fields


def _per_thousand_usd(policy: UserPolicy, account: AccountSnapshot, quotes: Mapping[str, Quote], now_ms: int,
                      fields: _Fields) -> _Raw | Skip:
    what, money = (("balance", account.balance) if policy.sizing_mode is SizingMode.BALANCE_MULTIPLIER
                   else ("equity", account.equity))
    fields["lots_per_thousand_usd"] = policy.sizing_value
    # The lower side: converted money never buys more lots than it is worth.
    rate = conversion_rate(account.currency, MULTIPLIER_CURRENCY, quotes, now_ms=now_ms,
                           max_age_ms=policy.max_quote_age_ms, higher=False)
    if isinstance(rate, Skip):
        return evolve(rate, detail=f"{policy.sizing_mode.name} sizing counts lots per 1,000 USD: {rate.detail}",
                      sizing=SizingInputs(**fields))
    usd = money * rate.value
    lots = policy.sizing_value * usd / MULTIPLIER_BASE
    shown = f"{money:.2f} {account.currency}" + ("" if account.currency == MULTIPLIER_CURRENCY
                                                 else f"{rate.how} = {usd:.2f} USD")
    how = f"{policy.sizing_value:g} lots per 1,000 USD of {what} {shown} = {lots:g} lots"
    fields.update(money_usd=usd, conversions=(rate,) if rate.value != 1 else ())
    return _Raw(lots, how, fields)


def _risk_percent(policy: UserPolicy, spec: SymbolSpecInfo, account: AccountSnapshot, quotes: Mapping[str, Quote],
                  now_ms: int, fields: _Fields, move_allowance: float, headroom: float) -> _Raw | Skip:
    pct, stop_loss, entry = policy.max_risk_per_trade_pct, fields["stop_loss"], fields["entry"]
    limit = risk_limit(account.equity, pct)
    budget = sizing_budget(limit, headroom)
    fields.update(risk_pct=pct, risk_limit=limit, budget=budget, headroom=headroom, move_allowance=move_allowance)
    if stop_loss is None or entry is None:
        return Skip(SkipReason.NO_STOP_LOSS, f"risk {pct:g}% sizing needs a stop loss to size by, and the signal "
                                             "has none: its risk is unbounded, the agent would refuse it",
                    SizingInputs(**fields))
    tick = tick_value(spec, account.currency, quotes, now_ms=now_ms, max_age_ms=policy.max_quote_age_ms)
    if isinstance(tick, Skip):
        return evolve(tick, sizing=SizingInputs(**fields))
    fields.update(tick_value=tick.value, tick_value_source=tick.source,
                  conversions=() if tick.rate is None else (tick.rate,))
    worst = worst_entry(entry, stop_loss, move_allowance)
    lots = lots_for(budget, worst, stop_loss, tick_size=spec.tick_size, tick_value=tick.value)
    ticks = abs(worst - stop_loss) / spec.tick_size
    moved = f" (the SL distance plus {move_allowance / spec.point:g} points the price may move)" \
        if move_allowance else ""
    ccy = account.currency
    return _Raw(lots, (f"risk {pct:g}% of equity {account.equity:.2f} = {limit:.2f} {ccy}, sized to {budget:.2f} "
                       f"{ccy} ({headroom:.0%} headroom) over {ticks:.1f} ticks{moved} at {tick.value:.6g} {ccy} "
                       f"per tick per lot ({tick.source}) = {lots:.4f} lots"), fields)


def tick_value(spec: SymbolSpecInfo, account_currency: str, quotes: Mapping[str, Quote], *, now_ms: int,
               max_age_ms: int) -> TickValue | Skip:
    """Value of one tick_size move of one lot in the account currency; a skip when the only
    quote to convert it with is older than ``max_age_ms``."""
    if spec.trade_calc_mode in FUTURES_CALC_MODES:
        return TickValue(spec.tick_value, "broker tick value, exchange-set for futures")
    profit = spec.currency_profit
    if not profit:
        return TickValue(spec.tick_value, "broker tick value, no profit currency in the spec")
    in_profit = spec.contract_size * spec.tick_size
    rate = conversion_rate(profit, account_currency, quotes, now_ms=now_ms, max_age_ms=max_age_ms)
    if isinstance(rate, Skip):
        if rate.reason is SkipReason.NO_CONVERSION:
            return TickValue(spec.tick_value, f"broker tick value, no {account_currency}{profit} or "
                                              f"{profit}{account_currency} quote to convert with")
        return rate
    return TickValue(in_profit * rate.value, f"{spec.contract_size:g} x {spec.tick_size:g} {profit}{rate.how}",
                     rate if rate.pair or rate.value != 1 else None)


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

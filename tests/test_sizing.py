"""Lot sizing (workers/sizing.py) against figures worked out by hand in each test.

Expected values are written plainly here (equity x pct / 100 x 0.99 / (ticks x value per
tick): the worker spends 99 % of the user's limit, SPEC §5's stated headroom), never
through the module's own helpers, so a wrong formula cannot agree with itself.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mt5fleet.proto.domain.account import AccountSnapshot
from mt5fleet.proto.domain.config import SizingMode
from mt5fleet.proto.domain.market import Quote, SymbolSpecInfo
from mt5fleet.workers.core.policy import Skip, SkipReason, UserPolicy
from mt5fleet.workers.core.sizing import Sizing, close_lots, conversion_rate, floor_to_step, lot_size, tick_value

NOW_MS = 1_700_000_000_000
SPENT = 0.99          # of the user's limit: 1 % headroom for the agent's check (proto/domain/risk.py)


# ----------------------------------------------------------------------------- builders


def spec(symbol: str = "EURUSD", **overrides: object) -> SymbolSpecInfo:
    """5-digit FX with a 100,000 contract, unless the symbol is JPY or gold."""
    base: dict[str, object] = dict(
        symbol=symbol, broker_symbol=symbol, digits=5, point=0.00001, contract_size=100_000.0,
        tick_size=0.00001, tick_value=1.0, volume_min=0.01, volume_max=100.0, volume_step=0.01,
        currency_base=symbol[:3], currency_profit=symbol[3:])
    if symbol.endswith("JPY"):
        base.update(digits=3, point=0.001, tick_size=0.001, tick_value=0.67)
    if symbol == "XAUUSD":
        base.update(digits=2, point=0.01, tick_size=0.01, contract_size=100.0, tick_value=1.0)
    base.update(overrides)
    return SymbolSpecInfo(**base)  # type: ignore[arg-type]


def account(currency: str = "USD", equity: float = 10_000.0, balance: float | None = None) -> AccountSnapshot:
    return AccountSnapshot(user_id="alice", account_number="1", currency=currency,
                           balance=equity if balance is None else balance, equity=equity, margin_used=0.0,
                           margin_free=equity, time_ms=NOW_MS)


def quote(symbol: str, bid: float, ask: float, age_ms: int = 0) -> Quote:
    return Quote(symbol=symbol, bid=bid, ask=ask, time_ms=NOW_MS - age_ms, spread_points=0.0)


def policy(**overrides: object) -> UserPolicy:
    return UserPolicy(user_id="alice", **overrides)  # type: ignore[arg-type]


QUOTES = {
    "EURUSD": quote("EURUSD", 1.08500, 1.08512),
    "USDJPY": quote("USDJPY", 149.500, 149.512),
    "EURJPY": quote("EURJPY", 162.200, 162.220),
}


def sized(pol: UserPolicy, sp: SymbolSpecInfo, *, entry: float, sl: float | None, acc: AccountSnapshot | None,
          quotes: dict[str, Quote] | None = None, **options: float) -> Sizing | Skip:
    return lot_size(pol, sp, entry=entry, stop_loss=sl, account=acc, quotes=QUOTES if quotes is None else quotes,
                    now_ms=NOW_MS, **options)


def size(pol: UserPolicy, sp: SymbolSpecInfo, *, entry: float, sl: float | None, acc: AccountSnapshot | None,
         quotes: dict[str, Quote] | None = None, **options: float) -> float | None:
    result = sized(pol, sp, entry=entry, sl=sl, acc=acc, quotes=quotes, **options)
    assert isinstance(result, Sizing), result
    return result.lots


def skip_of(result: Sizing | Skip) -> SkipReason:
    assert isinstance(result, Skip), result
    return result.reason


# ------------------------------------------------------------------------ risk percent


def test_risk_percent_usd_account_on_eurusd() -> None:
    # 1% of 10,000 = 100 USD, 99 spent; 50 pips = 500 ticks of 1 USD per lot -> 0.198 -> 0.19.
    assert size(policy(max_risk_per_trade_pct=1.0), spec(), entry=1.08512, sl=1.08012, acc=account()) == 0.19


def test_risk_percent_two_percent_and_odd_distance_rounds_down() -> None:
    # 2% of 10,000 = 200 USD, 198 spent, over 337 ticks x 1 USD = 0.5875... lots -> 0.58.
    assert size(policy(max_risk_per_trade_pct=2.0), spec(), entry=1.08512, sl=1.08175, acc=account()) == 0.58


def test_risk_percent_eur_account_converts_through_eurusd() -> None:
    # Profit in USD; 1 USD = 1 / 1.08500 EUR (the bid: the larger tick value).
    value_per_tick = 100_000 * 0.00001 / 1.08500
    expected = math.floor(10_000 * 0.01 * SPENT / (500 * value_per_tick) / 0.01) * 0.01
    lots = size(policy(), spec(), entry=1.08512, sl=1.08012, acc=account("EUR"))
    assert lots == pytest.approx(expected) and lots == 0.21     # 99 / 460.83 = 0.2148


def test_risk_percent_jpy_account_converts_through_usdjpy() -> None:
    # 1 USD = 149.512 JPY (ask); 1,500,000 JPY x 1% = 15,000 JPY, 14,850 spent, over 500 ticks x 149.512.
    lots = size(policy(), spec(), entry=1.08512, sl=1.08012, acc=account("JPY", equity=1_500_000))
    assert lots == math.floor(14_850 / (500 * 149.512) / 0.01) * 0.01 == 0.19


def test_risk_percent_usdjpy_for_usd_account_uses_the_symbol_itself() -> None:
    # Profit in JPY; 1 JPY = 1 / 149.500 USD. One tick of one lot: 100,000 x 0.001 = 100 JPY.
    value_per_tick = 100 / 149.500
    ticks = (149.512 - 149.012) / 0.001                     # 500
    expected = 99 / (ticks * value_per_tick)                # 0.296
    assert expected == pytest.approx(0.29601)
    assert size(policy(), spec("USDJPY"), entry=149.512, sl=149.012, acc=account()) == 0.29


def test_risk_percent_usdjpy_for_jpy_account_needs_no_conversion() -> None:
    # 1,500,000 JPY x 1% x 0.99 = 14,850 JPY over 500 ticks x 100 JPY = 0.297 lots.
    assert size(policy(), spec("USDJPY"), entry=149.512, sl=149.012, acc=account("JPY", 1_500_000)) == 0.29


def test_risk_percent_usdjpy_for_eur_account_converts_through_eurjpy() -> None:
    value_per_tick = 100 / 162.200                          # JPY -> EUR at the EURJPY bid
    expected = math.floor(99 / (500 * value_per_tick) / 0.01) * 0.01
    assert size(policy(), spec("USDJPY"), entry=149.512, sl=149.012, acc=account("EUR")) == expected == 0.32


def test_risk_percent_xauusd_usd_account() -> None:
    # Gold: 100 oz per lot, tick 0.01 -> 1 USD per tick. SL 5.00 away = 500 ticks -> 99 / 500 = 0.198.
    assert size(policy(), spec("XAUUSD"), entry=1951.37, sl=1946.37, acc=account()) == 0.19


def test_risk_percent_xauusd_eur_account() -> None:
    value_per_tick = 100 * 0.01 / 1.08500
    expected = math.floor(99 / (500 * value_per_tick) / 0.01) * 0.01
    assert size(policy(), spec("XAUUSD"), entry=1951.37, sl=1946.37, acc=account("EUR")) == expected == 0.21


def test_risk_percent_cent_account_counts_cents() -> None:
    # 1,000,000 US cents = 10,000 USD: 1% = 10,000 USC, 9,900 spent; a tick of a lot is 1 USD
    # = 100 USC (no quote needed) -> 9,900 / (500 x 100) = 0.198: the lots of a 10,000 USD account.
    result = sized(policy(), spec(), entry=1.08512, sl=1.08012, acc=account("USC", 1_000_000))
    assert isinstance(result, Sizing) and result.lots == 0.19
    assert result.inputs is not None and result.inputs.tick_value == pytest.approx(100.0)


def test_a_market_order_is_sized_for_the_price_moving_by_the_allowance() -> None:
    # 10-pip stop = 100 ticks. With 20 points allowed for the price to move before the agent
    # sends the order: 99 / 120 = 0.825 -> 0.82 lots, against 99 / 100 = 0.99 without.
    assert size(policy(), spec(), entry=1.08512, sl=1.08412, acc=account()) == 0.99
    assert size(policy(), spec(), entry=1.08512, sl=1.08412, acc=account(), move_allowance=0.0002) == 0.82
    # A sell: the stop above, the worst fill below the entry; the same 120 ticks.
    assert size(policy(), spec(), entry=1.08500, sl=1.08600, acc=account(), move_allowance=0.0002) == 0.82


def test_falls_back_to_the_broker_tick_value_without_a_conversion_quote() -> None:
    # GBP account on EURJPY: neither GBPJPY nor JPYGBP is quoted -> the spec's 0.53 GBP.
    sizing = sized(policy(), spec("EURJPY", tick_value=0.53), entry=162.22, sl=161.72, acc=account("GBP"))
    assert isinstance(sizing, Sizing)
    assert sizing.lots == math.floor(99 / (500 * 0.53) / 0.01) * 0.01 == 0.37
    assert "broker tick value" in sizing.detail


def test_a_stale_conversion_quote_is_a_skip_not_a_guess() -> None:
    # A JPY account sizing EURUSD converts through USDJPY: 2,001 ms old with a 2,000 ms maximum.
    old = {**QUOTES, "USDJPY": quote("USDJPY", 149.500, 149.512, age_ms=2_001)}
    result = sized(policy(), spec(), entry=1.08512, sl=1.08012, acc=account("JPY", 1_500_000), quotes=old)
    assert skip_of(result) is SkipReason.STALE_CONVERSION
    assert isinstance(result, Skip) and "USDJPY quote" in result.detail and "2001 ms old" in result.detail
    # Exactly the maximum age is still fresh, as for the traded symbol's quote.
    edge = {**QUOTES, "USDJPY": quote("USDJPY", 149.500, 149.512, age_ms=2_000)}
    assert size(policy(), spec(), entry=1.08512, sl=1.08012, acc=account("JPY", 1_500_000), quotes=edge) == 0.19


def test_futures_use_the_broker_tick_value() -> None:
    futures = spec("ESZ23", digits=2, point=0.01, tick_size=0.25, tick_value=12.5, contract_size=50.0,
                   currency_base="USD", currency_profit="USD", trade_calc_mode=1)
    # 10 points = 40 ticks x 12.5 USD = 500 USD per lot; 99 USD spent -> 0.198 -> 0.19.
    assert size(policy(), futures, entry=4500.00, sl=4490.00, acc=account()) == 0.19


def test_risk_percent_without_stop_loss_is_a_skip() -> None:
    result = sized(policy(preferred_lot_size=0.05), spec(), entry=1.08512, sl=None, acc=account())
    assert skip_of(result) is SkipReason.NO_STOP_LOSS
    assert isinstance(result, Skip) and "unbounded" in result.detail
    assert result.sizing is not None and result.sizing.risk_pct == 1.0 and result.sizing.equity == 10_000.0


def test_negative_equity_sizes_nothing() -> None:
    assert size(policy(), spec(), entry=1.08512, sl=1.08012, acc=account(equity=-50.0)) is None


def test_the_inputs_of_a_risk_sizing_are_kept() -> None:
    result = sized(policy(), spec(), entry=1.08512, sl=1.08012, acc=account("EUR"), move_allowance=0.0002)
    assert isinstance(result, Sizing) and result.inputs is not None
    inputs = result.inputs
    assert (inputs.mode, inputs.account_currency, inputs.equity, inputs.risk_pct) == (
        SizingMode.RISK_PERCENT, "EUR", 10_000.0, 1.0)
    assert inputs.risk_limit == pytest.approx(100.0) and inputs.budget == pytest.approx(99.0)
    assert inputs.move_allowance == 0.0002 and inputs.tick_size == 0.00001
    assert inputs.tick_value == pytest.approx(1 / 1.08500)
    ((rate,),) = [inputs.conversions]
    assert (rate.source, rate.target, rate.pair, rate.side, rate.quote_time_ms) == ("USD", "EUR", "EURUSD", "bid",
                                                                                   NOW_MS)
    assert inputs.lots == result.lots == 0.2     # 99 / (520 x 0.92166) = 0.2066
    assert inputs.raw_lots == pytest.approx(99 / (520 / 1.085))


# ------------------------------------------------------------------------ other modes


def test_fixed_lot_needs_no_account() -> None:
    pol = policy(sizing_mode=SizingMode.FIXED_LOT, preferred_lot_size=0.37)
    assert size(pol, spec(), entry=1.08512, sl=1.08012, acc=None) == 0.37


def test_balance_and_equity_multipliers() -> None:
    acc = account(equity=12_500.0, balance=10_000.0)
    # 0.01 lots per 1,000 USD: balance 10,000 -> 0.1; equity 12,500 -> 0.125 -> 0.12 (rounded down).
    assert size(policy(sizing_mode=SizingMode.BALANCE_MULTIPLIER, sizing_value=0.01), spec(), entry=1.0,
                sl=None, acc=acc) == 0.1
    assert size(policy(sizing_mode=SizingMode.EQUITY_MULTIPLIER, sizing_value=0.01), spec(), entry=1.0,
                sl=None, acc=acc) == 0.12


@pytest.mark.parametrize(("currency", "balance", "lots", "why"), [
    ("USD", 10_000.0, 1.0, "10,000 USD"),
    ("USC", 1_000_000.0, 1.0, "1,000,000 US cents = 10,000 USD, not 100x the lots"),
    ("EUC", 1_000_000.0, 1.08, "10,000 EUR at the EURUSD bid 1.08500 = 10,850 USD"),
    ("EUR", 10_000.0, 1.08, "10,850 USD"),
    ("JPY", 1_500_000.0, 1.0, "1,500,000 / USDJPY ask 149.512 = 10,032.6 USD, not 150x the lots"),
])
def test_multipliers_count_lots_per_1000_usd_whatever_the_account_currency(
        currency: str, balance: float, lots: float, why: str) -> None:
    pol = policy(sizing_mode=SizingMode.BALANCE_MULTIPLIER, sizing_value=0.1)
    result = sized(pol, spec(), entry=1.0, sl=None, acc=account(currency, balance))
    assert isinstance(result, Sizing) and result.lots == lots, why
    assert result.inputs is not None and result.inputs.lots_per_thousand_usd == 0.1
    assert result.inputs.money_usd == pytest.approx(lots * 10_000, rel=0.01)


def test_multipliers_without_a_fresh_conversion_quote_are_skipped() -> None:
    pol = policy(sizing_mode=SizingMode.EQUITY_MULTIPLIER, sizing_value=0.1)
    result = sized(pol, spec(), entry=1.0, sl=None, acc=account("CHF"))
    assert skip_of(result) is SkipReason.NO_CONVERSION
    assert isinstance(result, Skip) and "USDCHF" in result.detail and "per 1,000 USD" in result.detail
    old = {**QUOTES, "USDJPY": quote("USDJPY", 149.500, 149.512, age_ms=5_000)}
    assert skip_of(sized(pol, spec(), entry=1.0, sl=None, acc=account("JPY", 1_500_000), quotes=old)) \
        is SkipReason.STALE_CONVERSION


def test_conservative_mode_halves() -> None:
    assert size(policy(conservative_mode=True), spec(), entry=1.08512, sl=1.08012, acc=account()) == 0.09
    pol = policy(sizing_mode=SizingMode.FIXED_LOT, preferred_lot_size=0.05, conservative_mode=True)
    assert size(pol, spec(), entry=1.0, sl=None, acc=None) == 0.02      # 0.025 rounded down


def test_caps_user_max_lot_broker_max_and_wire_limit() -> None:
    big = account(equity=100_000_000.0)                                  # 1% = 1,000,000 USD -> 1,980 lots
    assert size(policy(max_lot=1.5), spec(), entry=1.08512, sl=1.08012, acc=big) == 1.5
    assert size(policy(), spec(volume_max=50.0), entry=1.08512, sl=1.08012, acc=big) == 50.0
    assert size(policy(), spec(volume_max=5_000.0), entry=1.08512, sl=1.08012, acc=big) == 1_000.0
    # A cap off the step grid is floored, never exceeded.
    assert size(policy(max_lot=1.234), spec(volume_step=0.1), entry=1.08512, sl=1.08012, acc=big) == 1.2


def test_rounds_down_to_the_step_without_losing_a_step_to_float_noise() -> None:
    # Without headroom: 29 USD over 100 ticks x 1 USD = 0.29 lots; in floats 0.29 / 0.01 = 28.999999999999996.
    assert math.floor(0.29 / 0.01) == 28
    assert size(policy(), spec(), entry=1.08512, sl=1.08412, acc=account(equity=2_900.0), headroom=0.0) == 0.29
    assert floor_to_step(0.29, 0.01) == 0.29
    assert floor_to_step(0.7, 0.1) == 0.7                                # 6.999999999999999 in floats
    assert floor_to_step(0.2999, 0.01) == 0.29
    assert floor_to_step(1.26, 0.5) == 1.0


def test_below_the_broker_minimum_is_none() -> None:
    # 1% of 506 x 0.99 = 5.0094 USD over 500 ticks = 0.010019 lots: the minimum, kept; 505 gives 0.009999.
    assert size(policy(), spec(), entry=1.08512, sl=1.08012, acc=account(equity=506.0)) == 0.01
    sizing = sized(policy(), spec(), entry=1.08512, sl=1.08012, acc=account(equity=505.0))
    assert isinstance(sizing, Sizing) and sizing.lots is None and "below the broker's minimum 0.01" in sizing.detail
    assert size(policy(), spec(volume_min=0.1, volume_step=0.1), entry=1.08512, sl=1.08012,
                acc=account(equity=4_000.0)) is None                     # 0.079 lots


def test_modes_reading_the_account_refuse_to_guess_without_one() -> None:
    with pytest.raises(ValueError, match="needs the account"):
        sized(policy(), spec(), entry=1.08512, sl=1.08012, acc=None)


def test_conversion_rates() -> None:
    def rate(source: str, target: str, higher: bool = True) -> float:
        found = conversion_rate(source, target, QUOTES, now_ms=NOW_MS, max_age_ms=2_000, higher=higher)
        assert not isinstance(found, Skip), found
        return found.value

    assert rate("USD", "USD") == 1.0
    assert rate("USD", "EUR") == 1 / 1.08500 and rate("USD", "EUR", higher=False) == 1 / 1.08512
    assert rate("USD", "JPY") == 149.512 and rate("USD", "JPY", higher=False) == 149.500
    assert rate("JPY", "USD") == 1 / 149.500
    assert rate("USD", "USC") == 100.0 and rate("USC", "USD") == 0.01     # cents, no quote needed
    assert rate("EUC", "USD", higher=False) == pytest.approx(1.085 / 100)
    missing = conversion_rate("CHF", "USD", QUOTES, now_ms=NOW_MS, max_age_ms=2_000)
    assert isinstance(missing, Skip) and missing.reason is SkipReason.NO_CONVERSION
    found = tick_value(spec(), "USD", QUOTES, now_ms=NOW_MS, max_age_ms=2_000)
    assert not isinstance(found, Skip) and found.value == pytest.approx(1.0)


# ------------------------------------------------------------------------ close lots


@pytest.mark.parametrize(("fraction", "volume", "expected"), [
    (0.0, 0.30, 0.0),          # 0: all of it
    (1.0, 0.30, 0.0),
    (0.5, 0.30, 0.15),
    (0.5, 0.03, 0.01),         # 0.015 -> rounded down to the step: never more than asked
    (0.1, 0.05, 0.01),         # 0.005 -> 0.01: never 0, which would close everything
    (0.5, 0.01, 0.0),          # rounds to the whole position
    (0.5, None, 0.0),          # volume unknown: the whole position
])
def test_close_lots(fraction: float, volume: float | None, expected: float) -> None:
    lots, why = close_lots(fraction, volume, spec(), 7)
    assert lots == expected
    assert "position 7" in why


# ------------------------------------------------------------------------ properties

SPECS = {"EURUSD": spec(), "USDJPY": spec("USDJPY"), "XAUUSD": spec("XAUUSD")}


@settings(max_examples=300, deadline=None)
@given(symbol=st.sampled_from(sorted(SPECS)), currency=st.sampled_from(["USD", "EUR", "JPY"]),
       equity=st.floats(0, 5_000_000), pct=st.floats(0.01, 10), sl_ticks=st.integers(1, 100_000),
       max_lot=st.sampled_from([0.0, 0.5, 1.234, 10.0]), step=st.sampled_from([0.01, 0.1, 0.5]),
       volume_max=st.sampled_from([1.0, 50.0, 500.0]), conservative=st.booleans())
def test_risk_never_exceeds_the_allowed_money_and_lots_respect_limits(
        symbol: str, currency: str, equity: float, pct: float, sl_ticks: int, max_lot: float, step: float,
        volume_max: float, conservative: bool) -> None:
    sp = spec(symbol, volume_step=step, volume_min=step, volume_max=volume_max)
    entry = {"EURUSD": 1.08512, "USDJPY": 149.512, "XAUUSD": 1951.37}[symbol]
    sl = entry - sl_ticks * sp.tick_size
    assume(sl > 0)
    pol = policy(max_risk_per_trade_pct=pct, max_lot=max_lot, conservative_mode=conservative)
    lots = size(pol, sp, entry=entry, sl=sl, acc=account(currency, equity))
    if lots is None:
        return
    # Limits, and a whole number of steps.
    assert step <= lots <= volume_max and (max_lot == 0 or lots <= max_lot)
    assert (Decimal(repr(lots)) / Decimal(repr(step))) % 1 == 0
    # Money at risk, worked out independently: ticks x value of a tick in the account currency.
    profit_ccy = symbol[3:]
    per_tick_profit = sp.contract_size * sp.tick_size
    if profit_ccy == currency:
        per_tick = per_tick_profit
    elif currency + profit_ccy in QUOTES:
        per_tick = per_tick_profit / QUOTES[currency + profit_ccy].bid
    else:
        per_tick = per_tick_profit * QUOTES[profit_ccy + currency].ask
    allowed = equity * pct / 100 * SPENT / (2 if conservative else 1)
    risk = lots * abs(entry - sl) / sp.tick_size * per_tick
    assert risk <= allowed * (1 + 1e-9)
    # Rounded down, not away: one more step would exceed the allowance, unless a cap stopped it.
    capped = lots + step > min(volume_max, max_lot or math.inf) + 1e-9
    assert capped or (lots + step) * abs(entry - sl) / sp.tick_size * per_tick > allowed * (1 - 1e-9)

"""SymbolInfo and Tick records for a broker symbol, every field of the real ones filled."""

from __future__ import annotations

from mt5fleet.client.core.mt5_constants import (
    DAY_OF_WEEK_WEDNESDAY,
    SYMBOL_CALC_MODE_FOREX,
    SYMBOL_CHART_MODE_BID,
    SYMBOL_ORDERS_GTC,
    SYMBOL_SWAP_MODE_DISABLED,
    SYMBOL_TRADE_MODE_FULL,
    TICK_FLAG_ASK,
    TICK_FLAG_BID,
)
from mt5fleet.client.sim.broker import BrokerProfile
from mt5fleet.client.sim.market import Quote, SymbolSpec
from mt5fleet.client.sim.records import SymbolInfo, Tick

# MQL5 flag sets the Python package does not export (SYMBOL_EXPIRATION_*, SYMBOL_ORDER_*).
EXPIRATION_ALL = 1 | 2 | 4 | 8  # GTC, DAY, SPECIFIED, SPECIFIED_DAY
ORDER_MODES_ALL = 1 | 2 | 4 | 8 | 16 | 32 | 64  # market, limit, stop, stop limit, SL, TP, close by
BOOK_DEPTH_ADVERTISED = 10

# Fields that are zero for a spot FX symbol of a retail broker (sessions, options, bonds...).
_NUMERIC_FIELDS_AT_ZERO = (
    "session_deals session_buy_orders session_sell_orders volume volumehigh volumelow start_time expiration_time"
    " option_mode option_right last lasthigh lastlow volume_real volumehigh_real volumelow_real option_strike"
    " trade_accrued_interest trade_face_value trade_liquidity_rate volume_limit swap_long swap_short margin_initial"
    " margin_maintenance session_volume session_turnover session_interest session_buy_orders_volume"
    " session_sell_orders_volume session_close session_aw session_price_settlement session_price_limit_min"
    " session_price_limit_max price_change price_volatility price_theoretical price_greeks_delta price_greeks_theta"
    " price_greeks_gamma price_greeks_vega price_greeks_rho price_greeks_omega price_sensitivity"
).split()
_TEXT_FIELDS_EMPTY = "basis category bank exchange formula isin page".split()


def tick_record(quote: Quote) -> Tick:
    return Tick(time=quote.time_msc // 1000, bid=quote.bid, ask=quote.ask, last=0.0, volume=0,
                time_msc=quote.time_msc, flags=TICK_FLAG_BID | TICK_FLAG_ASK, volume_real=0.0)


def symbol_info_record(spec: SymbolSpec, quote: Quote, broker: BrokerProfile, *, selected: bool,
                       tick_value: float) -> SymbolInfo:
    """``tick_value``: the value of one tick for one lot in the account currency."""
    fields: dict[str, object] = dict.fromkeys(_NUMERIC_FIELDS_AT_ZERO, 0)
    fields.update(dict.fromkeys(_TEXT_FIELDS_EMPTY, ""))
    fields.update(
        custom=False, chart_mode=SYMBOL_CHART_MODE_BID, select=selected, visible=selected,
        time=quote.time_msc // 1000, digits=spec.digits, spread=spec.spread, spread_float=True,
        ticks_bookdepth=BOOK_DEPTH_ADVERTISED, trade_calc_mode=SYMBOL_CALC_MODE_FOREX,
        trade_mode=SYMBOL_TRADE_MODE_FULL, trade_stops_level=broker.stops_level,
        trade_freeze_level=broker.freeze_level, trade_exemode=broker.execution_mode,
        # Swaps are not modelled, and the record says so rather than showing invented rates.
        swap_mode=SYMBOL_SWAP_MODE_DISABLED, swap_rollover3days=DAY_OF_WEEK_WEDNESDAY,
        margin_hedged_use_leg=False, expiration_mode=EXPIRATION_ALL, filling_mode=broker.filling_modes,
        order_mode=ORDER_MODES_ALL, order_gtc_mode=SYMBOL_ORDERS_GTC,
        bid=quote.bid, bidhigh=quote.bid, bidlow=quote.bid, ask=quote.ask, askhigh=quote.ask, asklow=quote.ask,
        point=spec.point, trade_tick_value=tick_value, trade_tick_value_profit=tick_value,
        trade_tick_value_loss=tick_value, trade_tick_size=spec.point, trade_contract_size=spec.contract_size,
        volume_min=broker.volume_min, volume_max=broker.volume_max, volume_step=broker.volume_step,
        session_open=quote.bid,
        # Hedged legs pay full margin in this simulation (see accounting.py).
        margin_hedged=spec.contract_size,
        currency_base=spec.base, currency_profit=spec.quote, currency_margin=spec.base,
        description=spec.description, name=spec.name, path=spec.path,
    )
    return SymbolInfo(**fields)

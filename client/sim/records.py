"""The MetaTrader5 package's result records, with the real names and field order.

The real ones are C ``PyStructSequence`` types; ``collections.namedtuple`` behaves the same
for callers: positional and attribute access, ``len``, iteration and ``_asdict()``. Field
lists are copied from ../shared/reference/metatrader5-api.txt and checked against the real
wheel by tests/test_mt5_conformance.py.
"""

from __future__ import annotations

from collections import namedtuple

TradePosition = namedtuple(
    "TradePosition",
    "ticket time time_msc time_update time_update_msc type magic identifier reason volume price_open sl tp"
    " price_current swap profit symbol comment external_id",
)
TradePosition.__doc__ = "Trade position structure"

TradeOrder = namedtuple(
    "TradeOrder",
    "ticket time_setup time_setup_msc time_done time_done_msc time_expiration type type_time type_filling state"
    " magic position_id position_by_id reason volume_initial volume_current price_open sl tp price_current"
    " price_stoplimit symbol comment external_id",
)
TradeOrder.__doc__ = "Trade order structure"

TradeDeal = namedtuple(
    "TradeDeal",
    "ticket order time time_msc type entry magic position_id reason volume price commission swap profit fee"
    " symbol comment external_id",
)
TradeDeal.__doc__ = "Trade deal structure"

TradeRequest = namedtuple(
    "TradeRequest",
    "action magic order symbol volume price stoplimit sl tp deviation type type_filling type_time expiration"
    " comment position position_by",
)
TradeRequest.__doc__ = "Trade request structure"

OrderSendResult = namedtuple(
    "OrderSendResult",
    "retcode deal order volume price bid ask comment request_id retcode_external request",
)
OrderSendResult.__doc__ = "order_send result structure"

OrderCheckResult = namedtuple(
    "OrderCheckResult",
    "retcode balance equity profit margin margin_free margin_level comment request",
)
OrderCheckResult.__doc__ = "order_check result structure"

Tick = namedtuple("Tick", "time bid ask last volume time_msc flags volume_real")
Tick.__doc__ = "This is a structure for storing latest symbol prices"

TerminalInfo = namedtuple(
    "TerminalInfo",
    "community_account community_connection connected dlls_allowed trade_allowed tradeapi_disabled email_enabled"
    " ftp_enabled notifications_enabled mqid build maxbars codepage ping_last community_balance retransmission"
    " company name language path data_path commondata_path",
)
TerminalInfo.__doc__ = "This is a structure for storing terminal information"

SymbolInfo = namedtuple(
    "SymbolInfo",
    "custom chart_mode select visible session_deals session_buy_orders session_sell_orders volume volumehigh"
    " volumelow time digits spread spread_float ticks_bookdepth trade_calc_mode trade_mode start_time"
    " expiration_time trade_stops_level trade_freeze_level trade_exemode swap_mode swap_rollover3days"
    " margin_hedged_use_leg expiration_mode filling_mode order_mode order_gtc_mode option_mode option_right"
    " bid bidhigh bidlow ask askhigh asklow last lasthigh lastlow volume_real volumehigh_real volumelow_real"
    " option_strike point trade_tick_value trade_tick_value_profit trade_tick_value_loss trade_tick_size"
    " trade_contract_size trade_accrued_interest trade_face_value trade_liquidity_rate volume_min volume_max"
    " volume_step volume_limit swap_long swap_short margin_initial margin_maintenance session_volume"
    " session_turnover session_interest session_buy_orders_volume session_sell_orders_volume session_open"
    " session_close session_aw session_price_settlement session_price_limit_min session_price_limit_max"
    " margin_hedged price_change price_volatility price_theoretical price_greeks_delta price_greeks_theta"
    " price_greeks_gamma price_greeks_vega price_greeks_rho price_greeks_omega price_sensitivity basis"
    " category currency_base currency_profit currency_margin bank description exchange formula isin name page"
    " path",
)
SymbolInfo.__doc__ = "This is a structure for storing symbol information"

AccountInfo = namedtuple(
    "AccountInfo",
    "login trade_mode leverage limit_orders margin_so_mode trade_allowed trade_expert margin_mode currency_digits"
    " fifo_close balance credit profit equity margin margin_free margin_level margin_so_call margin_so_so"
    " margin_initial margin_maintenance assets liabilities commission_blocked name server currency company",
)
AccountInfo.__doc__ = "This is a structure for storing account information"

BookInfo = namedtuple("BookInfo", "type price volume volume_dbl")
BookInfo.__doc__ = "This is a structure for storing Depth of Market information"

# Not a type of the real package: copy_rates_* return a numpy structured array with these
# dtype fields there. numpy is no dependency here, so the simulation returns a tuple of these.
Bar = namedtuple("Bar", "time open high low close tick_volume spread real_volume")
Bar.__doc__ = "One OHLC bar, the fields of the real copy_rates_* numpy dtype"

# The records of the real package, by name: what the conformance test compares.
RECORD_TYPES = {
    cls.__name__: cls
    for cls in (TradePosition, TradeOrder, TradeDeal, TradeRequest, OrderSendResult, OrderCheckResult, Tick,
                TerminalInfo, SymbolInfo, AccountInfo, BookInfo)
}

"""MT5 records (real or simulated named tuples) to wire messages. Pure: no terminal calls.

Canonical symbol names go on the wire; the broker's name rides along where a message has
a field for it. Times on the wire are UTC: a quote comes from ``Terminal.tick``, which has
converted the terminal's server time already.
"""

from __future__ import annotations

from typing import Any

from mt5fleet.client.core import mt5_constants as mt5
from mt5fleet.proto.v1 import account_pb2, common_pb2, prices_pb2, symbols_pb2

_ACCOUNT_TYPES = {
    mt5.ACCOUNT_TRADE_MODE_DEMO: common_pb2.ACCOUNT_TYPE_DEMO,
    mt5.ACCOUNT_TRADE_MODE_REAL: common_pb2.ACCOUNT_TYPE_LIVE,
    mt5.ACCOUNT_TRADE_MODE_CONTEST: common_pb2.ACCOUNT_TYPE_CONTEST,
}


def client_price(canonical: str, broker_symbol: str, quote: Any, info: Any, server: str) -> prices_pb2.ClientPrice:
    """``quote``: a ``terminal.Quote`` (bid, ask, time_ms in UTC)."""
    return prices_pb2.ClientPrice(
        symbol=canonical,
        bid=quote.bid,
        ask=quote.ask,
        spread=round((quote.ask - quote.bid) / info.point) if info.point else 0,
        timestamp=quote.time_ms,
        broker_server=server,
        broker_symbol=broker_symbol,
        digits=info.digits,
    )


def symbol_spec(canonical: str, info: Any) -> symbols_pb2.SymbolSpec:
    return symbols_pb2.SymbolSpec(
        symbol=canonical,
        broker_symbol=info.name,
        digits=info.digits,
        point=info.point,
        contract_size=info.trade_contract_size,
        tick_size=info.trade_tick_size,
        tick_value=info.trade_tick_value,
        volume_min=info.volume_min,
        volume_max=info.volume_max,
        volume_step=info.volume_step,
        stops_level=info.trade_stops_level,
        freeze_level=info.trade_freeze_level,
        filling_modes=info.filling_mode,
        trade_mode=info.trade_mode,
        currency_base=info.currency_base,
        currency_profit=info.currency_profit,
        currency_margin=info.currency_margin,
        spread=info.spread,
        trade_calc_mode=info.trade_calc_mode,
    )


def account_profile(user_id: str, account: Any, **extra: Any) -> account_pb2.AccountProfile:
    """``extra``: the agent's own figures (timestamp, open_positions, day_start_equity,
    peak_equity, sequence, risk_profile, preferences)."""
    return account_pb2.AccountProfile(
        user_id=user_id,
        account_number=str(account.login),
        broker_name=account.company,
        server_name=account.server,
        account_type=_ACCOUNT_TYPES.get(account.trade_mode, common_pb2.ACCOUNT_TYPE_UNSPECIFIED),
        base_currency=account.currency,
        balance=account.balance,
        equity=account.equity,
        margin_used=account.margin,
        margin_free=account.margin_free,
        leverage=account.leverage,
        margin_level=account.margin_level,
        profit=account.profit,
        hedging=account.margin_mode == mt5.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING,
        **extra,
    )


def account_fingerprint(account: Any, open_positions: int) -> tuple:
    """What makes an account update worth sending before the 60 s timer: money moved by a
    cent or more, or positions opened or closed."""
    return (round(account.balance, 2), round(account.equity, 2), round(account.margin, 2), open_positions)

"""Buy, Sell and Close: the pure-Python helpers of the real package's ``__init__.py``.

Same logic as the real ones (ten tries on a requote or price-off, deviation 10, no filling
mode given, so FOK as in a zeroed MQL5 request), written against any object with the
package's functions: the simulated terminal passes itself.
"""

from __future__ import annotations

from typing import Any, Protocol

from mt5fleet.client.core.mt5_constants import (
    ORDER_TYPE_BUY,
    ORDER_TYPE_SELL,
    TRADE_ACTION_DEAL,
    TRADE_RETCODE_DONE,
    TRADE_RETCODE_PRICE_OFF,
    TRADE_RETCODE_REQUOTE,
)

TRIES = 10
DEVIATION = 10
_RETRYABLE = (TRADE_RETCODE_REQUOTE, TRADE_RETCODE_PRICE_OFF)


class PackageApi(Protocol):
    def order_send(self, request: dict[str, Any]) -> Any: ...
    def positions_get(self, *, symbol: str | None = None, ticket: int | None = None) -> Any: ...
    def symbol_info_tick(self, symbol: str) -> Any: ...


def raw_order(api: PackageApi, order_type: int, symbol: str, volume: float, price: float,
              comment: str | None = None, ticket: int | None = None) -> Any:
    order: dict[str, Any] = {"action": TRADE_ACTION_DEAL, "symbol": symbol, "volume": volume, "type": order_type,
                             "price": price, "deviation": DEVIATION}
    if comment is not None:
        order["comment"] = comment
    if ticket is not None:
        order["position"] = ticket
    return api.order_send(order)


def market_order(api: PackageApi, order_type: int, symbol: str, volume: float, price: float | None,
                 comment: str | None, ticket: int | None) -> Any:
    """Buy or Sell: at ``price`` once, or at the current price with up to ten tries."""
    if price is not None:
        return raw_order(api, order_type, symbol, volume, price, comment, ticket)
    result = None
    for _ in range(TRIES):
        tick = api.symbol_info_tick(symbol)
        if tick is None:  # the real helper would fail on tick.ask here; None is kinder
            return None
        current = tick.ask if order_type == ORDER_TYPE_BUY else tick.bid
        result = raw_order(api, order_type, symbol, volume, current, comment, ticket)
        if result is None or result.retcode not in _RETRYABLE:
            break
    return result


def close_positions(api: PackageApi, symbol: str, comment: str | None, ticket: int | None) -> bool | str | None:
    """True when every buy/sell position closed, "Partially" when some did, False when none."""
    positions = api.positions_get(ticket=ticket) if ticket is not None else api.positions_get(symbol=symbol)
    tried = done = 0
    for position in positions or ():
        if position.type not in (ORDER_TYPE_BUY, ORDER_TYPE_SELL):
            continue
        tried += 1
        for _ in range(TRIES):
            tick = api.symbol_info_tick(symbol)
            if tick is None:
                return None
            if position.type == ORDER_TYPE_BUY:
                result = raw_order(api, ORDER_TYPE_SELL, symbol, position.volume, tick.bid, comment, position.ticket)
            else:
                result = raw_order(api, ORDER_TYPE_BUY, symbol, position.volume, tick.ask, comment, position.ticket)
            if result is None:
                return None
            if result.retcode not in _RETRYABLE:
                done += result.retcode == TRADE_RETCODE_DONE
                break
    if done > 0:
        return True if done == tried else "Partially"
    return False

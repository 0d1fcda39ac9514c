"""Trade request dicts in, TradeRequest records and trade-server comments out.

The real package reads the request's known keys, ignores the rest, and refuses a value of
the wrong type with ``(RES_E_INVALID_PARAMS, 'Invalid "<key>" argument')``; so does this.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from numbers import Integral, Real

from mt5fleet.client.core.mt5_constants import (
    TRADE_RETCODE_CLIENT_DISABLES_AT,
    TRADE_RETCODE_CONNECTION,
    TRADE_RETCODE_DONE,
    TRADE_RETCODE_FROZEN,
    TRADE_RETCODE_INVALID,
    TRADE_RETCODE_INVALID_CLOSE_VOLUME,
    TRADE_RETCODE_INVALID_EXPIRATION,
    TRADE_RETCODE_INVALID_FILL,
    TRADE_RETCODE_INVALID_ORDER,
    TRADE_RETCODE_INVALID_PRICE,
    TRADE_RETCODE_INVALID_STOPS,
    TRADE_RETCODE_INVALID_VOLUME,
    TRADE_RETCODE_MARKET_CLOSED,
    TRADE_RETCODE_NO_CHANGES,
    TRADE_RETCODE_NO_MONEY,
    TRADE_RETCODE_PLACED,
    TRADE_RETCODE_POSITION_CLOSED,
    TRADE_RETCODE_REJECT,
    TRADE_RETCODE_REQUOTE,
    TRADE_RETCODE_TRADE_DISABLED,
)
from mt5fleet.client.sim.records import TradeRequest

# MT5 keeps 31 characters of an order comment (MQL5's limit); a longer one is cut.
COMMENT_MAX = 31
ULONG_MAX = 2**64 - 1

_INT_FIELDS = ("action", "magic", "order", "deviation", "type", "type_filling", "type_time", "expiration",
               "position", "position_by")
_FLOAT_FIELDS = ("volume", "price", "stoplimit", "sl", "tp")
_UNSIGNED = ("magic", "order", "deviation", "position", "position_by", "expiration")

RETCODE_COMMENTS: Mapping[int, str] = {
    TRADE_RETCODE_DONE: "Request executed",
    TRADE_RETCODE_PLACED: "Request executed",
    TRADE_RETCODE_REQUOTE: "Requote",
    TRADE_RETCODE_REJECT: "Request rejected",
    TRADE_RETCODE_INVALID: "Invalid request",
    TRADE_RETCODE_INVALID_VOLUME: "Invalid volume",
    TRADE_RETCODE_INVALID_PRICE: "Invalid price",
    TRADE_RETCODE_INVALID_STOPS: "Invalid stops",
    TRADE_RETCODE_TRADE_DISABLED: "Trade disabled",
    TRADE_RETCODE_MARKET_CLOSED: "Market closed",
    TRADE_RETCODE_NO_MONEY: "No money",
    TRADE_RETCODE_INVALID_EXPIRATION: "Invalid expiration",
    TRADE_RETCODE_NO_CHANGES: "No changes",
    TRADE_RETCODE_CLIENT_DISABLES_AT: "AutoTrading disabled by client",
    TRADE_RETCODE_FROZEN: "Order or position frozen",
    TRADE_RETCODE_INVALID_FILL: "Unsupported filling mode",
    TRADE_RETCODE_CONNECTION: "No connection with the trade server",
    TRADE_RETCODE_INVALID_ORDER: "Invalid order",
    TRADE_RETCODE_POSITION_CLOSED: "Position doesn't exist",
    TRADE_RETCODE_INVALID_CLOSE_VOLUME: "Invalid close volume",
}


class InvalidArgument(ValueError):
    """A request the package itself refuses, before anything reaches the terminal."""


def comment_for(retcode: int) -> str:
    return RETCODE_COMMENTS.get(retcode, "Request rejected")


def _int_value(name: str, value: object) -> int:
    if isinstance(value, datetime) and name == "expiration":
        return int(value.timestamp())
    if not isinstance(value, Integral) or isinstance(value, bool):
        raise InvalidArgument(f'Invalid "{name}" argument')
    number = int(value)
    if name in _UNSIGNED and not 0 <= number <= ULONG_MAX:
        raise InvalidArgument(f'Invalid "{name}" argument')
    return number


def _float_value(name: str, value: object) -> float:
    if not isinstance(value, Real) or isinstance(value, bool):
        raise InvalidArgument(f'Invalid "{name}" argument')
    return float(value)


def parse_request(request: object) -> TradeRequest:
    """The TradeRequest record of a request dict: missing keys are 0 / "" as in MQL5's zeroed struct."""
    if not isinstance(request, Mapping):
        raise InvalidArgument("Invalid arguments")
    values: dict[str, object] = dict.fromkeys(TradeRequest._fields, 0)
    values.update(dict.fromkeys(_FLOAT_FIELDS, 0.0), symbol="", comment="")
    for name in _INT_FIELDS:
        if name in request:
            values[name] = _int_value(name, request[name])
    for name in _FLOAT_FIELDS:
        if name in request:
            values[name] = _float_value(name, request[name])
    for name in ("symbol", "comment"):
        if name in request:
            if not isinstance(request[name], str):
                raise InvalidArgument(f'Invalid "{name}" argument')
            values[name] = request[name]
    values["comment"] = str(values["comment"])[:COMMENT_MAX]
    return TradeRequest(**values)

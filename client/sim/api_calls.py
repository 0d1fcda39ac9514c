"""How every simulated API function behaves at its edge, as the real package's do.

A call with the wrong shape raises TypeError; a call the terminal cannot serve returns
None and leaves the reason in ``last_error()``; a served call resets ``last_error()`` to
success. Functions signal a refusal by raising ``CallRefused``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from mt5fleet.client.core import mt5_constants
from mt5fleet.client.core.mt5_constants import ORDER_TYPE_BUY, ORDER_TYPE_SELL, RES_E_INVALID_PARAMS
from mt5fleet.client.sim.market_hours import as_unix_seconds
from mt5fleet.client.sim.price_history import TIMEFRAMES

T = TypeVar("T")


class CallRefused(Exception):
    """A call the terminal answers with None and last_error() = (code, text)."""

    def __init__(self, code: int, text: str | None = None) -> None:
        super().__init__(code, text)
        self.code, self.text = code, text


class Terminal(Protocol):
    def _begin_call(self) -> bool: ...
    def _refuse(self, code: int, text: str | None) -> None: ...


def terminal_call(method: Callable[..., T]) -> Callable[..., T | None]:
    """Checks the call's shape and the IPC link, brings the simulation to now, then serves it."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def call(self: Terminal, *args: Any, **kwargs: Any) -> T | None:
        signature.bind(self, *args, **kwargs)  # a wrong call shape is a TypeError, as in the real module
        if not self._begin_call():
            return None
        try:
            return method(self, *args, **kwargs)
        except CallRefused as refused:
            self._refuse(refused.code, refused.text)
            return None

    return call


def no_unnamed(args: tuple[Any, ...]) -> None:
    """positions_get, orders_get and symbols_get take keywords only, and say so."""
    if args:
        raise CallRefused(RES_E_INVALID_PARAMS, "Unnamed arguments not allowed")


def seconds_arg(value: object) -> int:
    try:
        return int(as_unix_seconds(value))
    except TypeError:
        raise CallRefused(RES_E_INVALID_PARAMS, "Invalid date argument") from None


def count_arg(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CallRefused(RES_E_INVALID_PARAMS, "Invalid count argument")
    return value


def number_arg(value: object, position: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise CallRefused(RES_E_INVALID_PARAMS, f"Invalid {position} unnamed argument")
    return float(value)


def side_arg(value: object) -> int:
    """order_calc_*'s action: ORDER_TYPE_BUY or ORDER_TYPE_SELL."""
    if value not in (ORDER_TYPE_BUY, ORDER_TYPE_SELL):
        raise CallRefused(RES_E_INVALID_PARAMS, "Invalid 1st unnamed argument")
    return int(value)  # type: ignore[call-overload]


def group_arg(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise CallRefused(RES_E_INVALID_PARAMS, 'Invalid "group" argument')
    return value


def timeframe_arg(value: object) -> int:
    if value not in TIMEFRAMES:
        raise CallRefused(RES_E_INVALID_PARAMS, "Invalid timeframe argument")
    return int(value)  # type: ignore[call-overload]


def install_constants(cls: type) -> None:
    """Every module-level constant of the real package, as a class attribute: ``api.TRADE_RETCODE_DONE``."""
    for name in dir(mt5_constants):
        if name.isupper():
            setattr(cls, name, getattr(mt5_constants, name))

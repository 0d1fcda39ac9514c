"""The agent's one way into MetaTrader 5.

``Terminal`` wraps anything shaped like the ``MetaTrader5`` module: the real package on
Windows (``load_metatrader5()``) or a ``SimulatedMetaTrader5`` instance everywhere else.
Nothing else in the agent knows which one it has. IPC failures (-10000..-10005) are
counted by code; the connection is marked lost and re-initialised on the next call.
MT5 calls block on IPC, so the agent runs them on one dedicated thread.

MT5 reports times in the broker's trade-server time; past this adapter everything is UTC:
``tick`` gives a ``Quote`` stamped in UTC (and measures the offset as it reads,
``ServerClock``), ``deals`` takes UTC dates, ``utc_ms`` converts a record's time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mt5fleet.client.adapters.server_clock import ServerClock
from mt5fleet.client.core import mt5_constants as mt5

log = logging.getLogger("mt5fleet.agent.terminal")

# The terminal's own IPC failures: the terminal is gone or restarting, not a broker answer.
IPC_ERRORS = frozenset({
    mt5.RES_E_INTERNAL_FAIL, mt5.RES_E_INTERNAL_FAIL_SEND, mt5.RES_E_INTERNAL_FAIL_RECEIVE,
    mt5.RES_E_INTERNAL_FAIL_INIT, mt5.RES_E_INTERNAL_FAIL_CONNECT, mt5.RES_E_INTERNAL_FAIL_TIMEOUT,
})


class TerminalError(RuntimeError):
    def __init__(self, call: str, code: int, description: str) -> None:
        super().__init__(f"MT5 {call} failed: {code} {description}")
        self.call, self.code, self.description = call, code, description


class TerminalUnavailable(TerminalError):
    """An IPC failure: retry after the terminal connection is re-initialised."""


@dataclass(frozen=True, slots=True)
class Quote:
    """A tick as the agent uses it: the broker's bid and ask, and when, in UTC."""

    bid: float
    ask: float
    time_ms: int


@dataclass(frozen=True)
class Mt5Login:
    login: int | None = None
    password: Any = None          # a credentials.Secret: revealed only inside initialize()
    server: str | None = None
    path: str | None = None
    timeout_ms: int = 60_000

    def __repr__(self) -> str:
        return f"Mt5Login(login={self.login}, server={self.server!r}, password=***)"


def load_metatrader5() -> Any:
    """The real package, imported only when asked for: it exists on Windows alone."""
    try:
        import MetaTrader5  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError(
            "the MetaTrader5 package is not installed: it runs on Windows beside the MT5 terminal "
            "(pip install mt5fleet[agent] there); use mt5.backend = \"simulated\" elsewhere"
        ) from exc
    return MetaTrader5


class Terminal:
    def __init__(
        self,
        api: Any,
        login: Mt5Login | None = None,
        *,
        on_error: Callable[[int, str], None] = lambda code, call: None,
        server_clock: ServerClock | None = None,
    ) -> None:
        self.api = api
        self.login = login or Mt5Login()
        self.on_error = on_error
        self.server_clock = server_clock or ServerClock()
        self.connected = False
        self.last_error = ""  # the IPC failure that dropped the connection ("" while connected)

    # ---------------------------------------------------------------- connection
    def connect(self) -> None:
        """initialize() with the login; raises TerminalError naming the MT5 code."""
        self.api.shutdown()
        kwargs: dict[str, Any] = {"timeout": self.login.timeout_ms}
        if self.login.login is not None:
            kwargs["login"] = self.login.login
        if self.login.server:
            kwargs["server"] = self.login.server
        if self.login.password is not None:
            kwargs["password"] = self.login.password.reveal()
        args = (self.login.path,) if self.login.path else ()
        if not self.api.initialize(*args, **kwargs):
            self._fail("initialize")
        self.connected, self.last_error = True, ""
        self.server_clock.connected(self.login.server or "")  # perhaps another server: measure afresh
        log.info("MT5 terminal connected (login %s, server %s)", self.login.login, self.login.server)

    def shutdown(self) -> None:
        self.connected = False
        self.api.shutdown()

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call one API function; None results are failures unless ``not_found_ok``."""
        not_found_ok = kwargs.pop("not_found_ok", False)
        if not self.connected:
            self.connect()
        result = getattr(self.api, name)(*args, **kwargs)
        if result is None:
            code, _ = self.api.last_error()
            if not_found_ok and code not in IPC_ERRORS:
                self.on_error(code, name)
                return None
            self._fail(name)
        return result

    def _fail(self, call: str) -> None:
        code, description = self.api.last_error()
        self.on_error(code, call)
        if code in IPC_ERRORS or not self.connected:  # why the terminal is not usable, for the status page
            self.last_error = f"{call}: {code} {description}"
        if code in IPC_ERRORS:
            self.connected = False
            raise TerminalUnavailable(call, code, description)
        raise TerminalError(call, code, description)

    # ---------------------------------------------------------------- reads
    def terminal_info(self) -> Any:
        return self.call("terminal_info")

    def account_info(self) -> Any:
        return self.call("account_info")

    def broker_symbols(self) -> list[str]:
        return [info.name for info in self.call("symbols_get")]

    def symbol_info(self, broker_symbol: str) -> Any | None:
        return self.call("symbol_info", broker_symbol, not_found_ok=True)

    def tick(self, broker_symbol: str) -> Quote | None:
        tick = self.call("symbol_info_tick", broker_symbol, not_found_ok=True)
        if tick is None:
            return None
        self.server_clock.observe(broker_symbol, tick.time_msc)
        return Quote(tick.bid, tick.ask, self.server_clock.to_utc_ms(tick.time_msc))

    def utc_ms(self, server_ms: int) -> int:
        """A time MT5 reported (server time) in UTC."""
        return self.server_clock.to_utc_ms(server_ms)

    def select(self, broker_symbol: str) -> bool:
        return bool(self.call("symbol_select", broker_symbol, True, not_found_ok=True))

    def positions(self, broker_symbol: str | None = None) -> tuple:
        kwargs = {"symbol": broker_symbol} if broker_symbol else {}
        return tuple(self.call("positions_get", **kwargs) or ())

    def orders(self, broker_symbol: str | None = None) -> tuple:
        kwargs = {"symbol": broker_symbol} if broker_symbol else {}
        return tuple(self.call("orders_get", **kwargs) or ())

    def deal(self, ticket: int) -> Any | None:
        """One deal by its ticket, or None when the history does not (yet) hold it."""
        found = self.call("history_deals_get", ticket=ticket, not_found_ok=True)
        return found[0] if found else None

    def deals(self, date_from: float, date_to: float) -> tuple:
        """Deals between two UTC instants (unix seconds); MT5 takes them in server time."""
        server_from, server_to = self.server_clock.to_server_s(date_from), self.server_clock.to_server_s(date_to)
        return tuple(self.call("history_deals_get", server_from, server_to) or ())

    # ---------------------------------------------------------------- trading
    def order_send(self, request: Mapping[str, Any]) -> Any:
        """The broker's answer; an IPC failure raises (the outcome is then unknown)."""
        return self.call("order_send", dict(request))


# ----------------------------------------------------------------- symbol mapping

# What brokers append to a symbol: ".m", "_raw", "-pro", "#", or lower-case letters ("i", "m").
_SUFFIX = re.compile(r"^(?:[._#\-+!][A-Za-z0-9._\-+!]*|[a-z][a-z0-9]*)$")


def discover_symbol_map(
    canonical: Iterable[str], broker_names: Iterable[str], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """canonical -> the broker's name: an override, the exact name, or the name plus the
    broker's shortest suffix (EURUSD.m, EURUSDi). Symbols the broker lacks are absent."""
    names = sorted(broker_names, key=len)
    found: dict[str, str] = {}
    for symbol in canonical:
        if overrides and symbol in overrides:
            found[symbol] = overrides[symbol]
            continue
        for name in names:
            if name == symbol or (name.startswith(symbol) and _SUFFIX.match(name[len(symbol):])):
                found[symbol] = name
                break
    return found

"""The Python-to-terminal link of the simulated package: connected or not, and last_error().

The real package talks to terminal64.exe over IPC. Before ``initialize()``, after
``shutdown()`` and after the terminal went away, every call returns None and
``last_error()`` says why. Tests break the link on purpose with ``fail``:

* ``fail(code)`` drops the connection: every call fails with ``code`` (and ``initialize``
  with RES_E_INTERNAL_FAIL_INIT) until ``restore()``; then ``initialize()`` reconnects, as
  an agent must do after the real terminal restarts.
* ``fail(code, calls=n)`` fails only the next ``n`` calls (a timeout, say) and keeps the
  connection, as a busy terminal does.
"""

from __future__ import annotations

from collections.abc import Mapping

from mt5fleet.client.core.mt5_constants import (
    RES_E_AUTH_FAILED,
    RES_E_AUTO_TRADING_DISABLED,
    RES_E_FAIL,
    RES_E_INTERNAL_FAIL,
    RES_E_INTERNAL_FAIL_CONNECT,
    RES_E_INTERNAL_FAIL_INIT,
    RES_E_INTERNAL_FAIL_RECEIVE,
    RES_E_INTERNAL_FAIL_SEND,
    RES_E_INTERNAL_FAIL_TIMEOUT,
    RES_E_INVALID_PARAMS,
    RES_E_INVALID_VERSION,
    RES_E_NO_MEMORY,
    RES_E_NOT_FOUND,
    RES_E_UNSUPPORTED,
    RES_S_OK,
)

# The descriptions the real package gives (strings of MetaTrader5/_core).
ERROR_TEXT: Mapping[int, str] = {
    RES_S_OK: "Success",
    RES_E_FAIL: "Terminal: Call failed",
    RES_E_INVALID_PARAMS: "Terminal: Invalid params",
    RES_E_NO_MEMORY: "Terminal: Out of memory",
    RES_E_NOT_FOUND: "Terminal: Not found",
    RES_E_INVALID_VERSION: "Terminal: Incompatible versions",
    RES_E_AUTH_FAILED: "Terminal: Authorization failed",
    RES_E_UNSUPPORTED: "Terminal: Unsupported function",
    RES_E_AUTO_TRADING_DISABLED: "Auto-Trading using Python API disabled in Terminal",
    RES_E_INTERNAL_FAIL: "IPC call failed",
    RES_E_INTERNAL_FAIL_SEND: "IPC send failed",
    RES_E_INTERNAL_FAIL_RECEIVE: "IPC recv failed",
    RES_E_INTERNAL_FAIL_INIT: "IPC initialize failed, terminal not responding",
    RES_E_INTERNAL_FAIL_CONNECT: "No IPC connection",
    RES_E_INTERNAL_FAIL_TIMEOUT: "IPC timeout",
}


class IpcLink:
    def __init__(self) -> None:
        self.connected = False
        self.error: tuple[int, str] = (RES_S_OK, ERROR_TEXT[RES_S_OK])
        self._fault: int | None = None
        self._transient_code = 0
        self._transient_left = 0

    def set_error(self, code: int, text: str | None = None) -> None:
        self.error = (code, text if text is not None else ERROR_TEXT.get(code, ERROR_TEXT[RES_E_FAIL]))

    def fail(self, code: int, calls: int | None) -> None:
        if code not in ERROR_TEXT or code >= 0:
            raise ValueError(f"not an MT5 error code: {code}")
        if calls is None:
            self._fault, self.connected = code, False
        else:
            self._transient_code, self._transient_left = code, calls

    def restore(self) -> None:
        self._fault, self._transient_left = None, 0

    def _transient_failure(self) -> bool:
        if self._transient_left <= 0:
            return False
        self._transient_left -= 1
        self.set_error(self._transient_code)
        return True

    def admit(self) -> bool:
        """May a call reach the terminal? If not, last_error says why."""
        if self._transient_failure():
            return False
        if self._fault is not None:
            self.set_error(self._fault)
            return False
        if not self.connected:
            self.set_error(RES_E_INTERNAL_FAIL_CONNECT)
            return False
        return True

    def open(self) -> bool:
        """``initialize()``'s part: can the terminal be reached at all?"""
        if self._transient_failure():
            return False
        if self._fault is not None:
            self.set_error(RES_E_INTERNAL_FAIL_INIT)
            return False
        return True

"""The Terminal adapter: symbol discovery, and IPC failures counted and recovered from."""

from __future__ import annotations

import pytest
from agent_harness import WEDNESDAY_MORNING

from mt5fleet.client.adapters.terminal import Terminal, TerminalUnavailable, discover_symbol_map, load_metatrader5
from mt5fleet.client.core import mt5_constants as mt5
from mt5fleet.client.sim.broker import BROKERS
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.client.sim.terminal import SimulatedMetaTrader5


@pytest.mark.parametrize("names, expected", [
    (["EURUSD"], "EURUSD"),
    (["EURUSD.m", "EURUSD.mini"], "EURUSD.m"),
    (["EURUSDi"], "EURUSDi"),
    (["EURUSD.raw", "EURUSD_x"], "EURUSD_x"),
    (["EURUSD#"], "EURUSD#"),
])
def test_broker_names_are_found_from_the_canonical_symbol(names, expected):
    assert discover_symbol_map(["EURUSD"], names) == {"EURUSD": expected}


def test_a_different_symbol_sharing_a_prefix_is_not_taken():
    assert discover_symbol_map(["EURUSD"], ["EURUSDT", "EURUSDX"]) == {}
    assert discover_symbol_map(["USD"], ["USDJPY"]) == {}


def test_an_override_wins_and_missing_symbols_are_absent():
    names = ["EURUSD.m", "GOLD", "GBPUSD.m"]
    found = discover_symbol_map(["EURUSD", "XAUUSD", "NZDUSD"], names, {"XAUUSD": "GOLD"})
    assert found == {"EURUSD": "EURUSD.m", "XAUUSD": "GOLD"}


def _terminal():
    sim = SimulatedMetaTrader5(BROKERS["exness-m"], ReferenceFeed(seed=1), clock=lambda: WEDNESDAY_MORNING)
    errors: list[tuple[int, str]] = []
    terminal = Terminal(sim, on_error=lambda code, call: errors.append((code, call)))
    terminal.connect()
    return sim, terminal, errors


def test_ipc_failures_are_counted_by_code_and_the_terminal_reconnects_by_itself():
    sim, terminal, errors = _terminal()
    assert terminal.tick("EURUSD.m").bid > 0
    sim.fail_ipc(mt5.RES_E_INTERNAL_FAIL_TIMEOUT)
    with pytest.raises(TerminalUnavailable) as raised:
        terminal.tick("EURUSD.m")
    assert raised.value.code == mt5.RES_E_INTERNAL_FAIL_TIMEOUT and not terminal.connected
    assert errors[-1] == (mt5.RES_E_INTERNAL_FAIL_TIMEOUT, "symbol_info_tick")
    sim.restore_ipc()
    assert terminal.tick("EURUSD.m").bid > 0  # re-initialised on the next call, no restart
    assert terminal.connected


def test_an_unknown_symbol_is_none_not_an_outage():
    _, terminal, errors = _terminal()
    assert terminal.symbol_info("NOPE.m") is None and terminal.connected
    assert errors and errors[-1][0] == mt5.RES_E_NOT_FOUND


def test_the_real_package_is_imported_only_when_asked_for():
    # The agent imports on Linux; asking for the real terminal here says what to do instead.
    with pytest.raises(RuntimeError, match="runs on Windows.*simulated"):
        load_metatrader5()

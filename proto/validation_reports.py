"""Validation at the edge for the agent's reports: account, symbol specs, heartbeat.

Same contract as ``validation`` (which re-exports these): every violation is listed in
one ValidationError. Symbol specs behave like price batches: one bad spec is dropped and
reported, the good ones are kept, because losing a user's whole symbol list to one odd
broker symbol would stop all of that user's trading.
"""

from __future__ import annotations

import math

from mt5fleet.proto.domain.account import AccountSnapshot, HeartbeatInfo
from mt5fleet.proto.domain.market import SymbolSpecInfo, SymbolSpecs
from mt5fleet.proto.domain.trading import AccountType
from mt5fleet.proto.v1.account_pb2 import AccountProfile
from mt5fleet.proto.v1.heartbeat_pb2 import Heartbeat
from mt5fleet.proto.v1.symbols_pb2 import SymbolSpec, SymbolSpecList
from mt5fleet.proto.validation_rules import DEFAULT_LIMITS, Checks, Limits, check_entries

MAX_DIGITS = 10
# MT5 SYMBOL_TRADE_MODE_DISABLED (0) .. SYMBOL_TRADE_MODE_FULL (4).
TRADE_MODES = range(0, 5)

# ---------------------------------------------------------------------------- account


def check_account(msg: AccountProfile, now_ms: int,
                  limits: Limits = DEFAULT_LIMITS) -> AccountSnapshot:
    """Key figures of the account. The echoed risk profile and preferences are not
    checked or kept: ClientConfig is their authoritative copy."""
    checks = Checks(now_ms, limits)
    checks.user_id("user_id", msg.user_id)
    checks.account_number("account_number", msg.account_number)
    checks.text("broker_name", msg.broker_name)
    checks.text("server_name", msg.server_name)
    checks.enum("account_type", msg.account_type, AccountType)
    checks.currency("base_currency", msg.base_currency)
    # Balance, equity, P/L and free margin may be negative (losses, margin call);
    # margin held by positions cannot.
    for field in ("balance", "equity", "margin_free", "profit", "day_start_equity",
                  "peak_equity"):
        checks.amount(field, getattr(msg, field))
    checks.amount("margin_used", msg.margin_used, non_negative=True)
    checks.non_negative("margin_level", msg.margin_level)
    checks.non_negative("leverage", msg.leverage)
    checks.non_negative("open_positions", msg.open_positions)
    checks.non_negative("sequence", msg.sequence)
    checks.timestamp("timestamp", msg.timestamp)
    checks.raise_if_any("AccountProfile")
    return account_snapshot(msg)


def account_snapshot(msg: AccountProfile) -> AccountSnapshot:
    """The typed snapshot of a message already checked (or stored by the platform itself)."""
    return AccountSnapshot(
        user_id=msg.user_id, account_number=msg.account_number, currency=msg.base_currency,
        balance=msg.balance, equity=msg.equity, margin_used=msg.margin_used,
        margin_free=msg.margin_free, time_ms=msg.timestamp,
        account_type=AccountType(msg.account_type), broker_name=msg.broker_name,
        server_name=msg.server_name, margin_level=msg.margin_level, profit=msg.profit,
        leverage=msg.leverage, hedging=msg.hedging, open_positions=msg.open_positions,
        day_start_equity=msg.day_start_equity, peak_equity=msg.peak_equity,
        sequence=msg.sequence)


# ------------------------------------------------------------------------ symbol specs


def check_symbol_specs(msg: SymbolSpecList, now_ms: int,
                       limits: Limits = DEFAULT_LIMITS) -> SymbolSpecs:
    """Envelope problems refuse the list; a bad spec only costs itself (see ``rejected``)."""
    checks = Checks(now_ms, limits)
    checks.user_id("user_id", msg.user_id)
    checks.timestamp("timestamp", msg.timestamp)
    if len(msg.specs) > limits.max_specs_per_list:
        checks.add("specs", f"{len(msg.specs)} specs, more than the "
                            f"{limits.max_specs_per_list} allowed per list")
    checks.raise_if_any("SymbolSpecList")

    # Specs carry no time of their own: of two for one symbol the later one wins.
    kept, rejected = check_entries(
        checks, msg.specs, path="specs", what="spec", check=_check_spec, build=spec_info,
        key=lambda s: s.symbol, age=lambda s: 0)
    return SymbolSpecs(user_id=msg.user_id, time_ms=msg.timestamp, specs=kept, rejected=rejected)


def _check_spec(checks: Checks, spec: SymbolSpec) -> None:
    checks.symbol("symbol", spec.symbol)
    checks.text("broker_symbol", spec.broker_symbol, required=True)
    digits_ok = checks.in_range("digits", spec.digits, 0, MAX_DIGITS)
    if checks.positive("point", spec.point) and digits_ok:
        expected = 10.0 ** -spec.digits
        # MT5 defines point as 10^-digits; a mismatch means one of them is garbage.
        if not math.isclose(spec.point, expected, rel_tol=1e-6):
            checks.add("point", f"point {spec.point!r} does not match digits {spec.digits} "
                                f"(expected {expected!r})")
    # Workers divide by these when rounding prices and sizing positions.
    for field in ("contract_size", "tick_size", "tick_value", "volume_step"):
        checks.positive(field, getattr(spec, field))
    min_ok = checks.positive("volume_min", spec.volume_min)
    max_ok = checks.positive("volume_max", spec.volume_max)
    if min_ok and max_ok and spec.volume_min > spec.volume_max:
        checks.add("volume_max", f"volume_max {spec.volume_max!r} is below "
                                 f"volume_min {spec.volume_min!r}")
    for field in ("stops_level", "freeze_level", "spread", "trade_calc_mode"):
        checks.non_negative(field, getattr(spec, field))
    if spec.trade_mode not in TRADE_MODES:
        checks.add("trade_mode", f"trade_mode {spec.trade_mode} is not an MT5 "
                                 "SYMBOL_TRADE_MODE_* value (0..4)")
    for field in ("currency_base", "currency_profit", "currency_margin"):
        checks.asset_code(field, getattr(spec, field))


def spec_info(spec: SymbolSpec) -> SymbolSpecInfo:
    """The typed spec of a message already checked (or stored by the platform itself)."""
    return SymbolSpecInfo(
        symbol=spec.symbol, broker_symbol=spec.broker_symbol, digits=spec.digits,
        point=spec.point, contract_size=spec.contract_size, tick_size=spec.tick_size,
        tick_value=spec.tick_value, volume_min=spec.volume_min, volume_max=spec.volume_max,
        volume_step=spec.volume_step, stops_level=spec.stops_level,
        freeze_level=spec.freeze_level, filling_modes=spec.filling_modes,
        trade_mode=spec.trade_mode, currency_base=spec.currency_base,
        currency_profit=spec.currency_profit, currency_margin=spec.currency_margin,
        spread_points=spec.spread, trade_calc_mode=spec.trade_calc_mode)


# -------------------------------------------------------------------------- heartbeat

_HEARTBEAT_COUNTS = (
    "outbox_depth", "last_publish_latency_ms", "last_command_latency_ms",
    "p99_command_latency_ms", "uptime_s", "reconnects", "price_staleness_ms", "tick_rate",
    "commands_executed", "commands_rejected", "mt5_errors",
)


def check_heartbeat(msg: Heartbeat, now_ms: int,
                    limits: Limits = DEFAULT_LIMITS) -> HeartbeatInfo:
    checks = Checks(now_ms, limits)
    checks.user_id("user_id", msg.user_id)
    checks.text("agent_version", msg.agent_version, required=True)
    checks.ident("session_id", msg.session_id)
    checks.text("terminal_build", msg.terminal_build)
    checks.timestamp("timestamp", msg.timestamp)
    # Depths, latencies, rates and counters: a negative one is a bug, not a measurement.
    for field in _HEARTBEAT_COUNTS:
        checks.non_negative(field, getattr(msg, field))
    checks.raise_if_any("Heartbeat")
    figures = {field: getattr(msg, field) for field in _HEARTBEAT_COUNTS}
    return HeartbeatInfo(
        user_id=msg.user_id, agent_version=msg.agent_version, session_id=msg.session_id,
        time_ms=msg.timestamp, terminal_connected=msg.terminal_connected,
        trade_allowed=msg.trade_allowed, terminal_build=msg.terminal_build, **figures)

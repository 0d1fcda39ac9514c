"""Validation at the edge: decoded protobuf in, checked domain values out.

Every inbound message goes ``decode`` -> ``check_*`` before anything else looks at it.
A check reports *every* violation (field path and plain-words reason) in one
:class:`ValidationError`, so bad input is refused with a reason and counted, and never
crashes a consumer (SPEC §7). Price batches are checked quote by quote: one bad quote
is dropped and reported, the good ones around it are kept.

Time is injected (``now_ms``) so checks are deterministic. Agent reports (account,
symbol specs, heartbeat) live in ``validation_reports``, market data in
``validation_market``, ClientConfig in ``validation_config``, catch-up requests and pages in
``validation_catchup``, price batches in ``validation_prices``; their checks are re-exported
here, so callers import only this module.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from mt5fleet.proto.domain.trading import Command, CommandType, Execution, ExecutionStatus, OrderType, Signal
from mt5fleet.proto.v1.commands_pb2 import TradingCommand
from mt5fleet.proto.v1.execution_pb2 import ExecutionReport
from mt5fleet.proto.v1.signals_pb2 import UniversalSignal
from mt5fleet.proto.validation_catchup import check_catchup_batch, check_catchup_request
from mt5fleet.proto.validation_config import check_client_config
from mt5fleet.proto.validation_market import check_correlation_snapshot, check_market_data
from mt5fleet.proto.validation_prices import CheckedBatch, check_price_batch
from mt5fleet.proto.validation_reports import check_account, check_heartbeat, check_symbol_specs
from mt5fleet.proto.validation_rules import (
    DEFAULT_LIMITS,
    Checks,
    Limits,
    ValidationError,
    Violation,
    none_if_zero,
)

__all__ = [
    "DEFAULT_LIMITS", "CheckedBatch", "Limits", "ValidationError", "Violation", "check_account",
    "check_catchup_batch", "check_catchup_request", "check_client_config", "check_command",
    "check_correlation_snapshot", "check_execution", "check_heartbeat", "check_market_data",
    "check_price_batch", "check_signal", "check_symbol_specs", "decode",
]

M = TypeVar("M", bound=Message)
PAYLOAD = "<payload>"


def decode(message_type: type[M], payload: bytes, limits: Limits = DEFAULT_LIMITS) -> M:
    """Parse ``payload`` as ``message_type``; oversize or unparsable bytes -> ValidationError."""
    kind = message_type.DESCRIPTOR.name
    if len(payload) > limits.max_payload_bytes:
        raise ValidationError(kind, [Violation(
            PAYLOAD, f"payload of {len(payload)} bytes exceeds the limit of "
                     f"{limits.max_payload_bytes} bytes")])
    message = message_type()
    try:
        message.ParseFromString(bytes(payload))
    except DecodeError as exc:
        raise ValidationError(kind, [Violation(PAYLOAD, f"not a valid {kind}: {exc}")]) from None
    return message


# --------------------------------------------------------------------------- signals


def check_signal(msg: UniversalSignal, now_ms: int, limits: Limits = DEFAULT_LIMITS) -> Signal:
    checks = Checks(now_ms, limits)
    checks.ident("signal_id", msg.signal_id)
    checks.symbol("symbol", msg.symbol)
    order_type = checks.enum("order_type", msg.order_type, OrderType)
    action = checks.enum("action", msg.action, CommandType)
    checks.price("reference_bid", msg.reference_bid)
    checks.price("reference_ask", msg.reference_ask)
    checks.bid_ask(msg.reference_bid, msg.reference_ask,
                   bid_field="reference_bid", ask_field="reference_ask")
    checks.price("entry", msg.entry, optional=True)
    checks.price("stop_loss", msg.stop_loss, optional=True)
    checks.price("take_profit", msg.take_profit, optional=True)
    checks.in_range("confidence", msg.confidence, 0.0, 1.0)
    checks.in_range("close_fraction", msg.close_fraction, 0.0, 1.0)
    checks.timestamp("created_at", msg.created_at)
    checks.expiry("expires_at", msg.expires_at, "created_at", msg.created_at)
    for field in ("strategy", "source", "reason"):
        checks.text(field, getattr(msg, field))
    needs_target = action is not None and action.needs_target
    checks.ident("target_signal_id", msg.target_signal_id, required=needs_target)
    if order_type is not None and action is CommandType.OPEN_POSITION:
        _check_signal_entry(checks, msg, order_type)
    elif order_type is not None and action is CommandType.MODIFY_POSITION:
        _check_stops_against_market(checks, order_type, msg.reference_bid, msg.reference_ask,
                                    msg.stop_loss, msg.take_profit, prefix="reference_")
    checks.raise_if_any("UniversalSignal")
    return Signal(
        signal_id=msg.signal_id, symbol=msg.symbol, action=CommandType(msg.action),
        order_type=OrderType(msg.order_type), reference_bid=msg.reference_bid,
        reference_ask=msg.reference_ask, entry=none_if_zero(msg.entry),
        stop_loss=none_if_zero(msg.stop_loss), take_profit=none_if_zero(msg.take_profit),
        confidence=msg.confidence, created_at_ms=msg.created_at, expires_at_ms=msg.expires_at,
        strategy=msg.strategy, source=msg.source,
        target_signal_id=msg.target_signal_id or None, close_fraction=msg.close_fraction,
        reason=msg.reason)


def _check_signal_entry(checks: Checks, msg: UniversalSignal, order_type: OrderType) -> None:
    """A pending order needs its entry; a market one may leave it 0 ("at market")."""
    if order_type.is_pending and msg.entry == 0:
        checks.add("entry", f"entry 0.0 is not a price, and a {order_type.name} signal "
                            "needs one")
        return
    if msg.entry != 0:
        base, base_field = msg.entry, "entry"
    elif order_type.is_buy:
        base, base_field = msg.reference_ask, "reference_ask"
    else:
        base, base_field = msg.reference_bid, "reference_bid"
    checks.stops(is_buy=order_type.is_buy, base=base, base_field=base_field,
                 stop_loss=msg.stop_loss, take_profit=msg.take_profit)


def _check_stops_against_market(checks: Checks, order_type: OrderType, bid: float, ask: float,
                                stop_loss: float, take_profit: float, *, prefix: str) -> None:
    """New SL/TP of an open position lie on the correct side of the price it would close
    at (bid for a buy, ask for a sell), not of its entry: a trailed SL may pass the entry."""
    if order_type.is_buy:
        base, base_field = bid, f"{prefix}bid"
    else:
        base, base_field = ask, f"{prefix}ask"
    checks.stops(is_buy=order_type.is_buy, base=base, base_field=base_field,
                 stop_loss=stop_loss, take_profit=take_profit)


# -------------------------------------------------------------------------- commands


def check_command(msg: TradingCommand, now_ms: int, limits: Limits = DEFAULT_LIMITS) -> Command:
    checks = Checks(now_ms, limits)
    checks.ident("command_id", msg.command_id)
    checks.user_id("user_id", msg.user_id)
    kind = checks.enum("type", msg.type, CommandType)
    order_type = checks.enum("order_type", msg.order_type, OrderType)
    opens = kind is CommandType.OPEN_POSITION
    checks.symbol("symbol", msg.symbol, optional=kind is CommandType.CLOSE_ALL)
    checks.lots("lot_size", msg.lot_size, required=opens)
    checks.price("entry_price", msg.entry_price, optional=not opens)
    checks.price("stop_loss", msg.stop_loss, optional=True)
    checks.price("take_profit", msg.take_profit, optional=True)
    checks.in_range("confidence_score", msg.confidence_score, 0.0, 1.0)
    checks.timestamp("created_at", msg.created_at)
    checks.expiry("expires_at", msg.expires_at, "created_at", msg.created_at)
    checks.ident("target_command_id", msg.target_command_id, required=False)
    if kind is not None and kind.needs_target and not (msg.position_ticket
                                                        or msg.target_command_id):
        checks.add("position_ticket", f"a {kind.name} command needs a target: "
                                      "position_ticket and target_command_id are both empty")
    _check_command_provenance(checks, msg)
    if order_type is not None and opens:
        checks.stops(is_buy=order_type.is_buy, base=msg.entry_price, base_field="entry_price",
                     stop_loss=msg.stop_loss, take_profit=msg.take_profit)
    elif order_type is not None and kind is CommandType.MODIFY_POSITION:
        _check_stops_against_market(checks, order_type, msg.quote_bid, msg.quote_ask,
                                    msg.stop_loss, msg.take_profit, prefix="quote_")
    checks.raise_if_any("TradingCommand")
    return _command(msg)


def _check_command_provenance(checks: Checks, msg: TradingCommand) -> None:
    """Where the command's prices came from: all optional, but sane when present."""
    checks.text("reason", msg.reason)
    checks.text("adjustment_reason", msg.adjustment_reason)
    checks.text("sizing_reason", msg.sizing_reason)
    checks.price("original_entry", msg.original_entry, optional=True)
    checks.finite("price_adjustment", msg.price_adjustment)
    checks.price("reference_price", msg.reference_price, optional=True)
    checks.non_negative("max_deviation_points", msg.max_deviation_points)
    checks.ident("signal_id", msg.signal_id, required=False)
    checks.timestamp("signal_created_at", msg.signal_created_at, optional=True)
    checks.price("quote_bid", msg.quote_bid, optional=True)
    checks.price("quote_ask", msg.quote_ask, optional=True)
    checks.bid_ask(msg.quote_bid, msg.quote_ask, bid_field="quote_bid", ask_field="quote_ask")
    checks.timestamp("quote_time", msg.quote_time, optional=True)


def _command(msg: TradingCommand) -> Command:
    return Command(
        command_id=msg.command_id, user_id=msg.user_id, type=CommandType(msg.type),
        symbol=msg.symbol or None, order_type=OrderType(msg.order_type),
        lot_size=msg.lot_size, entry_price=none_if_zero(msg.entry_price),
        stop_loss=none_if_zero(msg.stop_loss), take_profit=none_if_zero(msg.take_profit),
        created_at_ms=msg.created_at, expires_at_ms=msg.expires_at,
        confidence=msg.confidence_score, reason=msg.reason,
        position_ticket=msg.position_ticket or None,
        target_command_id=msg.target_command_id or None,
        max_deviation_points=msg.max_deviation_points, signal_id=msg.signal_id or None,
        signal_created_at_ms=msg.signal_created_at or None,
        original_entry=none_if_zero(msg.original_entry),
        price_adjustment=msg.price_adjustment, adjustment_reason=msg.adjustment_reason,
        reference_price=none_if_zero(msg.reference_price),
        quote_bid=none_if_zero(msg.quote_bid), quote_ask=none_if_zero(msg.quote_ask),
        quote_time_ms=msg.quote_time or None, sizing_reason=msg.sizing_reason)


# ------------------------------------------------------------------------ executions


def check_execution(msg: ExecutionReport, now_ms: int,
                    limits: Limits = DEFAULT_LIMITS) -> Execution:
    checks = Checks(now_ms, limits)
    checks.ident("command_id", msg.command_id)
    checks.user_id("user_id", msg.user_id)
    status = checks.enum("status", msg.status, ExecutionStatus)
    if status is ExecutionStatus.UNSPECIFIED:
        checks.add("status", "status is not set (EXECUTION_STATUS_UNSPECIFIED)")
    kind = checks.enum("command_type", msg.command_type, CommandType)
    order_type = checks.enum("order_type", msg.order_type, OrderType)
    checks.symbol("symbol", msg.symbol, optional=True)
    filled = _must_report_fill(status, kind, order_type)
    checks.price("fill_price", msg.fill_price, optional=not filled)
    checks.lots("filled_volume", msg.filled_volume, required=filled)
    checks.finite("slippage_points", msg.slippage_points)
    checks.finite("slippage_reference_points", msg.slippage_reference_points)
    checks.price("requested_price", msg.requested_price, optional=True)
    checks.price("reference_price", msg.reference_price, optional=True)
    _check_execution_times(checks, msg)
    checks.non_negative("retcode", msg.retcode)
    checks.non_negative("sequence", msg.sequence)
    checks.ident("signal_id", msg.signal_id, required=False)
    checks.ident("reject_code", msg.reject_code, required=False)
    checks.text("reason", msg.reason)
    if status is not None and status.is_refusal and not (msg.reason.strip() or msg.reject_code):
        checks.add("reason", f"a {status.name} report must say why: reason and reject_code "
                             "are both empty")
    checks.raise_if_any("ExecutionReport")
    return Execution(
        command_id=msg.command_id, user_id=msg.user_id, status=ExecutionStatus(msg.status),
        command_type=CommandType(msg.command_type), order_type=OrderType(msg.order_type),
        received_at_ms=msg.received_at, executed_at_ms=msg.executed_at,
        symbol=msg.symbol or None, retcode=msg.retcode, position_ticket=msg.ticket or None,
        order_ticket=msg.order_ticket or None, deal_ticket=msg.deal_ticket or None,
        fill_price=none_if_zero(msg.fill_price), filled_volume=msg.filled_volume,
        slippage_points=msg.slippage_points,
        slippage_reference_points=msg.slippage_reference_points,
        requested_price=none_if_zero(msg.requested_price),
        reference_price=none_if_zero(msg.reference_price), signal_id=msg.signal_id or None,
        command_created_at_ms=msg.command_created_at or None,
        signal_created_at_ms=msg.signal_created_at or None, reason=msg.reason,
        reject_code=msg.reject_code, sequence=msg.sequence)


def _must_report_fill(status: ExecutionStatus | None, kind: CommandType | None,
                      order_type: OrderType | None) -> bool:
    """A deal happened, so its price and volume are known: any partial fill, a filled
    market open, a filled close. A placed pending order or a modify has no deal."""
    if status is ExecutionStatus.PARTIAL:
        return True
    if status is not ExecutionStatus.FILLED:
        return False
    market_open = kind is CommandType.OPEN_POSITION and order_type is not None \
        and order_type.is_market
    return market_open or kind is CommandType.CLOSE_POSITION


def _check_execution_times(checks: Checks, msg: ExecutionReport) -> None:
    received = checks.timestamp("received_at", msg.received_at)
    executed = checks.timestamp("executed_at", msg.executed_at)
    if received and executed and msg.executed_at < msg.received_at:
        checks.add("executed_at", f"executed_at {msg.executed_at} is before received_at "
                                  f"{msg.received_at}")
    checks.timestamp("command_created_at", msg.command_created_at, optional=True)
    checks.timestamp("signal_created_at", msg.signal_created_at, optional=True)

"""What ``mt5fleet audit`` prints: each decision record beside its execution reports, as
text for a person or JSON for a machine. Pure: records and reports in, a string out.

Slippage is computed here from the record's adjusted entry and the signal's reference, not
taken from the report alone: the audit shows what the trader got against what the platform
decided, and the agent's own figures beside it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from google.protobuf.json_format import MessageToDict

from mt5fleet.launcher.audit import Audited
from mt5fleet.proto.domain.config import SizingMode
from mt5fleet.proto.domain.trading import Command, CommandType
from mt5fleet.proto.v1 import execution_pb2
from mt5fleet.workers.adapters.decisions import decision_of_record
from mt5fleet.workers.adapters.wire import command_message
from mt5fleet.workers.core.adjust import Adjusted
from mt5fleet.workers.core.decision import Decision, DecisionInputs, recompute
from mt5fleet.workers.core.policy import UserPolicy

LABEL = 12


def render_text(found: Sequence[Audited]) -> str:
    return "\n\n".join(_one(audited) for audited in found)


def render_json(query: str, found: Sequence[Audited]) -> str:
    rows = [{"record": _dict(a.record), "stored_at": _iso(a.stored_at_ms),
             "executions": [_dict(report) for report in a.reports], "fills": _fills(a),
             "recomputed_matches": _recomputes(a.record)} for a in found]
    return json.dumps({"query": query, "decisions": rows}, indent=2, sort_keys=True)


# ----------------------------------------------------------------------------- text

def _one(audited: Audited) -> str:
    record, decision = audited.record, decision_of_record(audited.record)
    inputs = decision.inputs
    outcome = (f"skipped ({decision.skip_reason})" if decision.skipped
               else ", ".join(f"command {c.command_id}" for c in decision.commands) or "no command")
    lines = [f"signal {record.signal_id} -> user {record.user_id}: {outcome}",
             _row("decided", f"{_iso(record.decided_at)} by adjustment replica {record.worker_replica or '?'} "
                             f"(mt5fleet {record.worker_version or '?'}); stored {_iso(audited.stored_at_ms)}"),
             _row("signal", _signal_text(inputs)), *_input_rows(record, inputs), *_conversion_rows(decision)]
    if decision.skipped:
        lines.append(_row("outcome", f"skipped: {decision.skip_reason}: {decision.skip_detail}"))
    for command in decision.commands:
        lines += _command_rows(command, inputs, decision.notes)
        lines += [_row("execution", text) for text in _execution_texts(command, audited.reports, inputs)]
    lines.append(_row("recomputed", _recompute_text(record)))
    return "\n".join(lines)


def _row(label: str, text: str) -> str:
    return f"  {label:<{LABEL}} {text}"


def _signal_text(inputs: DecisionInputs) -> str:
    signal, show = inputs.signal, _shower(inputs)
    action = signal.action.name.replace("_POSITION", "").replace("_", " ").lower()
    levels = ", ".join(f"{name} {show(value)}" for name, value in (
        ("entry", signal.entry), ("SL", signal.stop_loss), ("TP", signal.take_profit)) if value is not None)
    target = f" of signal {signal.target_signal_id}" if signal.target_signal_id else ""
    return (f"{action}{target} {signal.order_type.name} {signal.symbol}: reference bid/ask "
            f"{show(signal.reference_bid)}/{show(signal.reference_ask)}" + (f", {levels}" if levels else "")
            + f"; {signal.strategy or 'no strategy'}, confidence {signal.confidence:g}, "
              f"made {_iso(signal.created_at_ms)}")


def _input_rows(record: Any, inputs: DecisionInputs) -> list[str]:
    rows, show, state = [], _shower(inputs), inputs.state
    quote, spec = inputs.quote, inputs.spec
    if quote is not None:
        where = " on ".join(part for part in (quote.broker_symbol, quote.broker_server) if part)
        rows.append(_row("user quote", f"bid/ask {show(quote.bid)}/{show(quote.ask)}" + (f" ({where})" if where else "")
                                       + f", {inputs.quote_age_ms} ms old (max {state.policy.max_quote_age_ms} ms), "
                                         f"spread {quote.spread_points:g} points"))
    if spec is not None:
        rows.append(_row("symbol", f"{spec.symbol} -> broker {spec.broker_symbol}: digits {spec.digits}, tick "
                                   f"{show(spec.tick_size)} (value {spec.tick_value:g}), "
                                   f"contract {spec.contract_size:g} "
                                   f"{spec.currency_base}/{spec.currency_profit}, volume {spec.volume_min:g}-"
                                   f"{spec.volume_max:g} step {spec.volume_step:g}, stops level {spec.stops_level} "
                                   f"(spec {record.spec_version})"))
    account = state.account
    if account is not None:
        rows.append(_row("account", f"equity {account.equity:.2f} {account.currency}, balance {account.balance:.2f}, "
                                    f"leverage 1:{account.leverage}, {account.open_positions} open position(s); "
                                    f"snapshot {inputs.decided_at_ms - account.time_ms} ms old"))
    rows.append(_row("policy", _policy_text(inputs)))
    for signal_id, refs in sorted(state.positions_by_signal.items()):
        for opened_by, ticket in refs:
            volume = state.position_volumes.get(ticket)
            rows.append(_row("position", f"ticket {ticket} opened by {opened_by} (signal {signal_id}), "
                                         + (f"{volume:g} lots open" if volume is not None else "volume unknown")))
    return rows


def _conversion_rows(decision: Decision) -> list[str]:
    """The rates the sizing applied (the signal's own quote may be one), else the other
    quotes it read."""
    inputs, rates = decision.inputs, decision.sizing.conversions if decision.sizing else ()
    if rates:
        return [_row("conversion", f"1 {rate.source} = {rate.value:.6g} {rate.target}"
                                   + (f" ({rate.pair} {rate.side}" + (f", {inputs.decided_at_ms - rate.quote_time_ms} "
                                      "ms old" if rate.quote_time_ms is not None else "") + ")" if rate.pair else ""))
                for rate in rates]
    return [_row("conversion", f"{q.symbol} bid/ask {q.bid:g}/{q.ask:g}, {inputs.decided_at_ms - q.time_ms} ms old")
            for q in inputs.conversion_quotes]


def _policy_text(inputs: DecisionInputs) -> str:
    policy, state = inputs.state.policy, inputs.state
    flags = [name for name, on in (("paused", policy.paused), ("close-only", policy.close_only),
                                   ("conservative", policy.conservative_mode), ("stopped out", state.stopped_out))
             if on]
    return (f"tier {policy.tier_name or policy.tier.name.lower()}; {_sizing_text(policy)}, max lot "
            f"{policy.max_lot or 'broker'}, max spread {policy.max_spread_points or 'none'}, deviation "
            f"{policy.max_deviation_points} points; trades {', '.join(sorted(policy.trading_symbols)) or 'nothing'}"
            + (f"; {', '.join(flags)}" if flags else ""))


def _sizing_text(policy: UserPolicy) -> str:
    mode = policy.sizing_mode
    if mode is SizingMode.FIXED_LOT:
        return f"fixed lot {policy.preferred_lot_size:g}"
    if mode is SizingMode.RISK_PERCENT:
        return f"risk {policy.max_risk_per_trade_pct:g}% per trade"
    what = "balance" if mode is SizingMode.BALANCE_MULTIPLIER else "equity"
    return f"{what} multiplier {policy.sizing_value:g} (lots per 1,000)"


def _command_rows(command: Command, inputs: DecisionInputs, notes: Sequence[str]) -> list[str]:
    show = _shower(inputs)
    rows = [_row("command", f"{command.command_id}: {command.type.name} {command.order_type.name} "
                            f"{command.symbol or 'every symbol'}, expires {_iso(command.expires_at_ms)}")]
    if command.entry_price is not None and command.original_entry is not None:
        points = _points(command.entry_price - command.original_entry, inputs)
        rows.append(_row("entry", f"reference {show(command.original_entry)} -> adjusted {show(command.entry_price)} "
                                  f"({points}): {command.adjustment_reason}"))
    elif command.adjustment_reason:
        rows.append(_row("entry", command.adjustment_reason))
    if command.stop_loss is not None or command.take_profit is not None:
        rows.append(_row("stops", f"SL {show(command.stop_loss)}, TP {show(command.take_profit)}"))
    why = "; ".join(n for n in notes if n != command.adjustment_reason)
    lots = "close all of it" if command.type is CommandType.CLOSE_POSITION and not command.lot_size \
        else f"{command.lot_size:g}"
    rows.append(_row("lot", lots + (f": {why}" if why else "")))
    return rows


def _execution_texts(command: Command, reports: Sequence[Any], inputs: DecisionInputs) -> list[str]:
    mine = [r for r in reports if r.command_id == command.command_id]
    if not mine:
        return ["no execution report (yet)"]
    return [_execution_text(report, command, inputs) for report in mine]


def _execution_text(report: Any, command: Command, inputs: DecisionInputs) -> str:
    status = execution_pb2.ExecutionStatus.Name(report.status).removeprefix("EXECUTION_STATUS_")
    if report.status not in (execution_pb2.EXECUTION_STATUS_FILLED, execution_pb2.EXECUTION_STATUS_PARTIAL):
        why = report.reject_code or report.reason or "no reason given"
        return f"{status} at {_iso(report.executed_at)} (retcode {report.retcode}): {why}"
    fill = _fill(report, command, inputs)
    slipped = "" if fill is None else (
        f"; slippage {_signed(fill['vs_adjusted_points'])} points vs the adjusted entry, "
        f"{_signed(fill['vs_reference_points'])} vs the reference")
    return (f"{status} {report.filled_volume:g} lots at {_shower(inputs)(report.fill_price)}, ticket {report.ticket}, "
            f"{report.executed_at - report.received_at} ms after receipt{slipped} (agent reported "
            f"{_signed(report.slippage_points)}/{_signed(report.slippage_reference_points)})")


def _signed(value: float) -> str:
    """Signed to one decimal; a fill at the price is 0.0, never "-0.0"."""
    return f"{value:+.1f}" if round(value, 1) else "0.0"


def _recompute_text(record: Any) -> str:
    matches = _recomputes(record)
    if matches is None:
        return "not recomputable (the adjustment failed on these inputs)"
    return ("the same output, from the record's inputs alone" if matches
            else f"DIFFERENT output today (recorded by mt5fleet {record.worker_version or '?'})")


# ----------------------------------------------------------------------------- figures

def _recomputes(record: Any) -> bool | None:
    """Whether ``adjust`` on the record's inputs alone gives the recorded output again."""
    decision = decision_of_record(record)
    try:
        result = recompute(decision.inputs)
    except (ValueError, KeyError, ArithmeticError):
        return None
    if isinstance(result, Adjusted):
        return not decision.skipped and [command_message(c) for c in result.commands] == list(record.commands)
    return (result.reason.value, result.detail) == (decision.skip_reason, decision.skip_detail)


def _fills(audited: Audited) -> list[dict[str, Any]]:
    decision = decision_of_record(audited.record)
    out = []
    for command in decision.commands:
        for report in audited.reports:
            fill = _fill(report, command, decision.inputs) if report.command_id == command.command_id else None
            if fill is not None:
                out.append({"command_id": command.command_id, **fill})
    return out


def _fill(report: Any, command: Command, inputs: DecisionInputs) -> dict[str, Any] | None:
    """Points the fill is worse (+) or better (-) than the adjusted entry and the reference."""
    if not report.fill_price or command.entry_price is None or not command.type.opens:
        return None
    worse = 1 if command.order_type.is_buy else -1
    reference = command.original_entry or inputs.signal.reference_price
    return {"fill_price": report.fill_price, "adjusted_entry": command.entry_price, "reference_entry": reference,
            "vs_adjusted_points": _raw_points((report.fill_price - command.entry_price) * worse, inputs),
            "vs_reference_points": _raw_points((report.fill_price - reference) * worse, inputs)}


def _digits(inputs: DecisionInputs) -> int | None:
    """The symbol's digits, from the spec or the user's quote read; None when neither was."""
    spec, quote = inputs.spec, inputs.quote
    return spec.digits if spec is not None else (quote.digits if quote is not None and quote.digits else None)


def _raw_points(distance: float, inputs: DecisionInputs) -> float:
    return round(float(Decimal(repr(distance)).scaleb(_digits(inputs) or 5)), 1)


def _points(distance: float, inputs: DecisionInputs) -> str:
    return f"{_raw_points(distance, inputs):+.1f} points"


def _shower(inputs: DecisionInputs) -> Callable[[float | None], str]:
    """Prices to the symbol's digits; as sent (shortest repr) when the digits are unknown."""
    digits = _digits(inputs)
    return lambda price: "-" if price is None else repr(price) if digits is None else f"{price:.{digits}f}"


def _iso(unix_ms: int) -> str:
    if not unix_ms:
        return "-"
    moment = dt.datetime.fromtimestamp(unix_ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{unix_ms % 1000:03d} UTC"


def _dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


"""Building the ExecutionReport the agent publishes for every command it handled."""

from __future__ import annotations

from mt5fleet.client.core.orders import Outcome
from mt5fleet.proto.domain.trading import Command
from mt5fleet.proto.v1 import commands_pb2, execution_pb2

STATUS = {
    "FILLED": execution_pb2.EXECUTION_STATUS_FILLED,
    "PARTIAL": execution_pb2.EXECUTION_STATUS_PARTIAL,
    "REJECTED": execution_pb2.EXECUTION_STATUS_REJECTED,
    "EXPIRED": execution_pb2.EXECUTION_STATUS_EXPIRED,
    "DUPLICATE": execution_pb2.EXECUTION_STATUS_DUPLICATE,
    "FAILED": execution_pb2.EXECUTION_STATUS_FAILED,
}


class ReportBuilder:
    """One user's reports, numbered in the order built (``sequence``, from ``first_sequence``)."""

    def __init__(self, user_id: str, first_sequence: int) -> None:
        self.user_id = user_id
        self._sequence = first_sequence

    def build(self, command_id: str, status: str, *, received: int, executed: int | None = None,
              command: Command | None = None, outcome: Outcome | None = None, reason: str = "",
              reject_code: str = "", message: commands_pb2.TradingCommand | None = None,
              ) -> execution_pb2.ExecutionReport:
        self._sequence += 1
        report = execution_pb2.ExecutionReport(
            command_id=command_id, user_id=self.user_id, status=STATUS[status], received_at=received,
            executed_at=executed or received, reason=reason, reject_code=reject_code, sequence=self._sequence)
        source = message or (to_wire(command) if command else None)
        if source is not None:
            report.symbol, report.command_type, report.order_type = source.symbol, source.type, source.order_type
            report.signal_id, report.requested_price = source.signal_id, source.entry_price
            # The price slippage_reference_points is measured against (orders.reference_entry).
            report.reference_price = source.original_entry or source.reference_price
            report.command_created_at, report.signal_created_at = source.created_at, source.signal_created_at
        if outcome is not None:
            report.retcode, report.reason = outcome.retcode, outcome.reason
            report.ticket = outcome.position_ticket or 0
            report.order_ticket, report.deal_ticket = outcome.order_ticket or 0, outcome.deal_ticket or 0
            report.fill_price, report.filled_volume = outcome.fill_price or 0.0, outcome.filled_volume
            report.slippage_points = outcome.slippage_points
            report.slippage_reference_points = outcome.slippage_reference_points
        return report


def to_wire(command: Command) -> commands_pb2.TradingCommand:
    return commands_pb2.TradingCommand(
        command_id=command.command_id, symbol=command.symbol or "", type=command.type.value,
        order_type=command.order_type.value, entry_price=command.entry_price or 0.0,
        signal_id=command.signal_id or "", reference_price=command.reference_price or 0.0,
        original_entry=command.original_entry or 0.0, created_at=command.created_at_ms,
        signal_created_at=command.signal_created_at_ms or 0)

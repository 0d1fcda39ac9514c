"""From a TradingCommand on the wire to a stored ExecutionReport, exactly once.

Every command, live or caught up, goes through one queue and one pipeline: decode and
validate, dedupe against the persistent ledger, refuse if expired, run the client-side risk
checks, record the intent, execute in the terminal, then put the report in the outbox
before recording the outcome (a crash in between leaves an in-flight entry that recovery
resolves from the terminal). The command counts as handled when JetStream stores the
report (``on_report_stored``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mt5fleet.client.adapters.execution import UnknownSymbol
from mt5fleet.client.adapters.ledger import CommandLedger, LedgerState
from mt5fleet.client.adapters.metrics import (
    STAGE_RECEIVED_TO_EXECUTED,
    STAGE_SIGNAL_TO_EXECUTED,
    STAGE_SIGNAL_TO_RECEIVED,
    STAGE_WORKER_TO_AGENT,
    AgentMetrics,
)
from mt5fleet.client.adapters.publisher import Publisher
from mt5fleet.client.adapters.terminal import TerminalError
from mt5fleet.client.core.orders import Outcome
from mt5fleet.client.core.risk import Decision, RejectCode
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import Clock, now_ms
from mt5fleet.proto.domain.ids import command_id_of_report, magic_for, report_message_id
from mt5fleet.proto.domain.trading import Command
from mt5fleet.proto.v1 import commands_pb2, execution_pb2
from mt5fleet.proto.validation import ValidationError, check_command, decode

log = logging.getLogger("mt5fleet.agent.commands")

EXECUTION_KIND = "execution"
# A duplicate arriving this long after the original is a resend worth reporting; sooner
# it is the live copy racing the catch-up copy of the same command.
DUPLICATE_REPORT_AFTER_MS = 60_000

_STATUS = {
    "FILLED": execution_pb2.EXECUTION_STATUS_FILLED,
    "PARTIAL": execution_pb2.EXECUTION_STATUS_PARTIAL,
    "REJECTED": execution_pb2.EXECUTION_STATUS_REJECTED,
    "EXPIRED": execution_pb2.EXECUTION_STATUS_EXPIRED,
    "DUPLICATE": execution_pb2.EXECUTION_STATUS_DUPLICATE,
    "FAILED": execution_pb2.EXECUTION_STATUS_FAILED,
}


@dataclass(frozen=True)
class Handled:
    """One line of the status page's recent commands."""

    command_id: str
    type: str
    symbol: str
    status: str
    reason: str
    fill_price: float
    slippage_points: float
    at_ms: int


# (command, now_ms) -> the risk decision, computed on the MT5 thread from live terminal state.
RiskGate = Callable[[Command, int], Awaitable[Decision]]
# (command) -> the outcome, run on the MT5 thread.
Execute = Callable[[Command], Awaitable[Outcome]]


class CommandPipeline:
    def __init__(self, *, user_id: str, clock: Clock, ledger: CommandLedger, publisher: Publisher,
                 metrics: AgentMetrics, risk_gate: RiskGate, execute: Execute) -> None:
        self.user_id = user_id
        self.clock = clock
        self.ledger = ledger
        self.publisher = publisher
        self.metrics = metrics
        self.risk_gate = risk_gate
        self.execute = execute
        self.queue: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
        self.recent: deque[Handled] = deque(maxlen=50)
        self.last_latency_ms = 0.0
        self.executed = 0
        self._report_key = ledger.secret_key("report-ids")
        self.rejected = 0
        self._report_subject = subjects.user_subject(user_id, subjects.Channel.EXECUTIONS)
        self._sequence = now_ms(clock)

    # ---------------------------------------------------------------- intake
    def submit(self, raw: bytes, source: str) -> None:
        self.queue.put_nowait((raw, source))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                raw, source = await asyncio.wait_for(self.queue.get(), timeout=0.5)
            except TimeoutError:
                continue
            try:
                await self.handle(raw, source)
            except Exception:  # one bad command must not stop the next good one
                log.exception("command handling failed")

    async def handle(self, raw: bytes, source: str) -> None:
        received = now_ms(self.clock)
        command = self._parse(raw, received)
        if command is None:
            return
        entry = self.ledger.get(command.command_id)
        if entry is not None:
            self._duplicate(command, entry, source, received)
            return
        self._observe_arrival(command, received)
        if command.is_expired(received):
            self._refuse(command, "EXPIRED", RejectCode.EXPIRED,
                         f"arrived {received - command.expires_at_ms} ms after it expired", received)
            return
        decision = await self.risk_gate(command, received)
        if not decision.allowed:
            status = "EXPIRED" if decision.code is RejectCode.EXPIRED else "REJECTED"
            self._refuse(command, status, decision.code, decision.reason, received)
            return
        if not self.ledger.begin(command.command_id, magic=magic_for(command.command_id), stream_seq=None,
                                 received_at_ms=received):
            return  # raced by another copy of the same command: it owns the execution
        outcome = await self._execute(command)
        self._finish(command, outcome, received)

    # ---------------------------------------------------------------- steps
    def _parse(self, raw: bytes, received: int) -> Command | None:
        try:
            message = decode(commands_pb2.TradingCommand, raw)
        except ValidationError as exc:
            self._invalid(None, exc)
            return None
        try:
            command = check_command(message, received)
        except ValidationError as exc:
            self._invalid(message, exc)
            return None
        if command.user_id != self.user_id:
            self._invalid(message, f"command for user {command.user_id!r} reached {self.user_id!r}")
            return None
        return command

    def _invalid(self, message: commands_pb2.TradingCommand | None, problem: Any) -> None:
        """Counted and reported when the command can be named at all; never raised."""
        self.metrics.invalid.labels("TradingCommand").inc()
        log.warning("refused a malformed command: %s", problem)
        if message is None or not message.command_id or message.user_id != self.user_id:
            return
        if self.ledger.get(message.command_id) is not None:
            return
        self.ledger.begin(message.command_id, magic=0, stream_seq=None, received_at_ms=now_ms(self.clock))
        report = self._report(message.command_id, "REJECTED", received=now_ms(self.clock), reason=str(problem),
                              reject_code=RejectCode.INVALID.value, message=message)
        self._store(message.command_id, report, "REJECTED", RejectCode.INVALID.value)

    def _duplicate(self, command: Command, entry: Any, source: str, received: int) -> None:
        self.metrics.commands.labels("duplicate").inc()
        late = received - entry.received_at_ms >= DUPLICATE_REPORT_AFTER_MS
        if source != "live" or not late or entry.state is LedgerState.BEGUN:
            return
        log.warning("command %s delivered again %d ms later: not executed twice", command.command_id,
                    received - entry.received_at_ms)
        report = self._report(command.command_id, "DUPLICATE", received=received, command=command,
                              reason=f"already handled ({entry.status}); not executed again")
        self.publisher.enqueue(EXECUTION_KIND, self._report_subject, self._report_id(command.command_id, "duplicate"),
                               report.SerializeToString())

    def _refuse(self, command: Command, status: str, code: RejectCode | None, reason: str, received: int) -> None:
        self.ledger.begin(command.command_id, magic=magic_for(command.command_id), stream_seq=None,
                          received_at_ms=received)
        report = self._report(command.command_id, status, received=received, command=command, reason=reason,
                              reject_code=code.value if code else "")
        self._store(command.command_id, report, status, code.value if code else status.lower(), command)

    async def _execute(self, command: Command) -> Outcome:
        try:
            return await self.execute(command)
        except UnknownSymbol as exc:
            return Outcome.no_trade("REJECTED", str(exc))
        except TerminalError as exc:  # IPC failure mid-send: the outcome is unknown until recovery
            return Outcome.no_trade("FAILED", str(exc))

    def _finish(self, command: Command, outcome: Outcome, received: int) -> None:
        executed = now_ms(self.clock)
        report = self._report(command.command_id, outcome.status, received=received, executed=executed,
                              command=command, outcome=outcome)
        self._store(command.command_id, report, outcome.status, None, command)
        if outcome.status in ("FILLED", "PARTIAL"):
            self.executed += 1
            self.metrics.command_latency.labels(STAGE_RECEIVED_TO_EXECUTED).observe((executed - received) / 1000)
            if command.signal_created_at_ms:
                latency = (executed - command.signal_created_at_ms) / 1000
                self.last_latency_ms = latency * 1000
                self.metrics.command_latency.labels(STAGE_SIGNAL_TO_EXECUTED).observe(max(latency, 0))
            if outcome.fill_price is not None:
                for against, points in (("adjusted", outcome.slippage_points),
                                        ("reference", outcome.slippage_reference_points)):
                    self.metrics.slippage.labels(against).observe(points)
                    self.metrics.slippage_net.labels(against).inc(points)
        else:
            self.metrics.rejected.labels("broker" if outcome.status == "REJECTED" else "terminal").inc()

    def _store(self, command_id: str, report: execution_pb2.ExecutionReport, status: str,
               reject_code: str | None, command: Command | None = None) -> None:
        """Outbox first, ledger second: see the module docstring."""
        payload = report.SerializeToString()
        self.publisher.enqueue(EXECUTION_KIND, self._report_subject, self._report_id(command_id), payload)
        self.ledger.record_outcome(command_id, status, payload)
        self.metrics.commands.labels(status.lower()).inc()
        if reject_code:
            self.rejected += 1
            self.metrics.rejected.labels(reject_code).inc()
        self.recent.appendleft(Handled(
            command_id, commands_pb2.CommandType.Name(report.command_type), report.symbol, status, report.reason,
            report.fill_price, report.slippage_points, report.executed_at or report.received_at))

    def settle(self, entry: Any, outcome: Outcome, *, executed_ms: int | None = None) -> None:
        """Report a command left in flight by a crash (see ``recovery``); ``executed_ms``:
        when the terminal says it was done (UTC), else now."""
        report = self._report(entry.command_id, outcome.status, received=entry.received_at_ms,
                              executed=executed_ms or now_ms(self.clock), outcome=outcome)
        self._store(entry.command_id, report, outcome.status, None)

    def requeue_unreported(self) -> None:
        """Reports stored in the ledger whose JetStream ack never came (the agent stopped
        first): into the outbox again; the message id (keyed per command) dedupes them."""
        for entry in self.ledger.unreported():
            if entry.report:
                self.publisher.enqueue(EXECUTION_KIND, self._report_subject, self._report_id(entry.command_id),
                                       entry.report)

    def on_report_stored(self, kind: str, msg_id: str) -> None:
        if kind != EXECUTION_KIND:
            return
        command_id, report_kind = command_id_of_report(msg_id)
        if report_kind == "report":
            self.ledger.mark_reported(command_id)

    def _report_id(self, command_id: str, kind: str = "report") -> str:
        return report_message_id(command_id, self._report_key, kind)

    # ---------------------------------------------------------------- reports
    def _observe_arrival(self, command: Command, received: int) -> None:
        if command.created_at_ms:
            self.metrics.command_latency.labels(STAGE_WORKER_TO_AGENT).observe(
                max(received - command.created_at_ms, 0) / 1000)
        if command.signal_created_at_ms:
            self.metrics.command_latency.labels(STAGE_SIGNAL_TO_RECEIVED).observe(
                max(received - command.signal_created_at_ms, 0) / 1000)

    def _report(self, command_id: str, status: str, *, received: int, executed: int | None = None,
                command: Command | None = None, outcome: Outcome | None = None, reason: str = "",
                reject_code: str = "", message: commands_pb2.TradingCommand | None = None,
                ) -> execution_pb2.ExecutionReport:
        self._sequence += 1
        report = execution_pb2.ExecutionReport(
            command_id=command_id, user_id=self.user_id, status=_STATUS[status], received_at=received,
            executed_at=executed or received, reason=reason, reject_code=reject_code, sequence=self._sequence)
        source = message or (_to_wire(command) if command else None)
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


def _to_wire(command: Command) -> commands_pb2.TradingCommand:
    return commands_pb2.TradingCommand(
        command_id=command.command_id, symbol=command.symbol or "", type=command.type.value,
        order_type=command.order_type.value, entry_price=command.entry_price or 0.0,
        signal_id=command.signal_id or "", reference_price=command.reference_price or 0.0,
        original_entry=command.original_entry or 0.0, created_at=command.created_at_ms,
        signal_created_at=command.signal_created_at_ms or 0)

"""What became of each command, stored exactly once: its ExecutionReport into the outbox
first, its outcome into the ledger second (a crash in between leaves an in-flight entry that
recovery settles from the terminal; trying again appends the same report, which JetStream
keeps once: same message id). The command counts as handled when JetStream stores the
report (``on_report_stored``).

A store the disk refuses is kept in memory (``pending``) and tried again by the pipeline,
which sends no other order meanwhile: a known outcome is never dropped.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mt5fleet.client.adapters.disk import DiskUnavailable
from mt5fleet.client.adapters.ledger import CommandLedger, LedgerState
from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.client.adapters.publisher import Publisher
from mt5fleet.client.app.reports import ReportBuilder
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.ids import command_id_of_report, report_message_id
from mt5fleet.proto.domain.trading import Command
from mt5fleet.proto.v1 import commands_pb2, execution_pb2

log = logging.getLogger("mt5fleet.agent.commands")

EXECUTION_KIND = "execution"


@dataclass(frozen=True)
class CommandFacts:
    """What the command itself said, beside its report: the status page shows the
    reference entry against the adjusted one, the adjustment and why, and the lot and why."""

    lots: float = 0.0
    reference_entry: float = 0.0    # the signal's entry on the reference feed
    adjusted_entry: float = 0.0     # the entry the server adjusted to this user's broker
    adjustment: float = 0.0         # adjusted - reference, quote currency
    adjustment_reason: str = ""
    lot_why: str = ""               # the agent's risk check: what the lot risks, against the limit
    sizing_reason: str = ""         # the server's words: why this lot size ("" from an older worker)
    stop_loss: float = 0.0
    take_profit: float = 0.0

    @classmethod
    def of(cls, command: Command, lot_why: str = "") -> CommandFacts:
        return cls(lots=command.lot_size, reference_entry=command.original_entry or command.reference_price or 0.0,
                   adjusted_entry=command.entry_price or 0.0, adjustment=command.price_adjustment,
                   adjustment_reason=command.adjustment_reason, lot_why=lot_why,
                   sizing_reason=command.sizing_reason,
                   stop_loss=command.stop_loss or 0.0, take_profit=command.take_profit or 0.0)


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
    order_type: str = ""
    filled_volume: float = 0.0
    slippage_reference_points: float = 0.0
    latency_ms: int | None = None   # signal created -> filled (None: not filled, or no signal time)
    facts: CommandFacts = CommandFacts()


def _latency_ms(report: execution_pb2.ExecutionReport) -> int | None:
    if report.fill_price and report.signal_created_at and report.executed_at:
        # Two hosts' clocks: a fast fill can look negative, and the page must not show that.
        return max(report.executed_at - report.signal_created_at, 0)
    return None


class Outcomes:
    def __init__(self, *, user_id: str, ledger: CommandLedger, publisher: Publisher, metrics: AgentMetrics,
                 first_sequence: int) -> None:
        self.ledger, self.publisher, self.metrics = ledger, publisher, metrics
        self.reports = ReportBuilder(user_id, first_sequence)
        self.recent: deque[Handled] = deque(maxlen=50)
        self.rejected = 0
        self._key = ledger.secret_key("report-ids")
        self._subject = subjects.user_subject(user_id, subjects.Channel.EXECUTIONS)
        self.pending: dict[str, Callable[[], None]] = {}  # command id -> the store the disk refused

    def store_or_keep(self, command_id: str, report: execution_pb2.ExecutionReport, status: str,
                      reject_code: str | None = None, facts: CommandFacts | None = None) -> None:
        """Store it now or, when the disk refuses, keep it for ``retry``."""
        def store() -> None:
            self._store(command_id, report, status, reject_code, facts)

        try:
            store()
        except DiskUnavailable as exc:
            log.warning("the report of %s (%s) waits in memory: %s", command_id, status, exc)
            self.pending[command_id] = store

    def retry(self) -> None:
        """Every store kept; ``DiskUnavailable`` at the first the disk still refuses."""
        for command_id, store in list(self.pending.items()):
            store()
            del self.pending[command_id]

    def _store(self, command_id: str, report: execution_pb2.ExecutionReport, status: str,
               reject_code: str | None, facts: CommandFacts | None = None) -> None:
        payload = report.SerializeToString()
        self.publisher.enqueue(EXECUTION_KIND, self._subject, self.report_id(command_id), payload)
        self.ledger.record_outcome(command_id, status, payload)
        self.metrics.commands.labels(status.lower()).inc()
        if reject_code:
            self.rejected += 1
            self.metrics.rejected.labels(reject_code).inc()
        self.recent.appendleft(Handled(
            command_id, commands_pb2.CommandType.Name(report.command_type), report.symbol, status, report.reason,
            report.fill_price, report.slippage_points, report.executed_at or report.received_at,
            order_type=commands_pb2.OrderType.Name(report.order_type), filled_volume=report.filled_volume,
            slippage_reference_points=report.slippage_reference_points, latency_ms=_latency_ms(report),
            facts=facts or CommandFacts(reference_entry=report.reference_price,
                                        adjusted_entry=report.requested_price)))

    def duplicate(self, command_id: str, report: execution_pb2.ExecutionReport) -> None:
        """A DUPLICATE report: its own message id, nothing recorded (the first report stands)."""
        self.publisher.enqueue(EXECUTION_KIND, self._subject, self.report_id(command_id, "duplicate"),
                               report.SerializeToString())

    def requeue_unreported(self) -> None:
        """Reports stored in the ledger whose JetStream ack never came (the agent stopped
        first): into the outbox again; the message id (keyed per command) dedupes them."""
        for entry in self.ledger.unreported():
            if entry.report:
                self._requeue(entry.command_id, entry.report)

    def _requeue(self, command_id: str, payload: bytes) -> None:
        def enqueue() -> None:
            self.publisher.enqueue(EXECUTION_KIND, self._subject, self.report_id(command_id), payload)

        try:
            enqueue()
        except DiskUnavailable:
            self.pending[command_id] = enqueue

    def on_report_stored(self, kind: str, msg_id: str) -> None:
        if kind != EXECUTION_KIND:
            return
        command_id, report_kind = command_id_of_report(msg_id)
        if report_kind != "report":
            return
        entry = self.ledger.get(command_id)
        if entry is None:  # never begun here (pruned, or a copied data folder): nothing to mark
            log.warning("JetStream stored the report of %s, which the ledger does not know", command_id)
            return
        if entry.state is LedgerState.BEGUN:
            return  # its outcome waits for the disk; the report goes out again once it is recorded
        self.ledger.mark_reported(command_id)

    def report_id(self, command_id: str, kind: str = "report") -> str:
        return report_message_id(command_id, self._key, kind)

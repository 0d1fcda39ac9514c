"""From a TradingCommand on the wire to a stored ExecutionReport, exactly once.

Every command, live or caught up, goes through one queue and one pipeline: decode and
validate, dedupe against the persistent ledger, refuse if expired, run the client-side risk
checks, record the intent, execute in the terminal, then store the outcome (``outcomes``).

Commands wait, in order, rather than fail while the agent cannot act safely (``Held``):

* the MT5 terminal does not answer: a command waits before its risk check and runs when
  the terminal is back, or is refused as EXPIRED once its expiry passes meanwhile;
* the terminal dropped while an order was being sent: its outcome is unknown, so nothing
  else runs until the terminal's history settles it (``resolve``, as after a crash);
* the data folder cannot be written: no order is sent whose ledger entry is not on disk,
  and an outcome already known is kept in memory until it can be stored.

What waits is retried every ``RETRY_S``, logged once when it starts and once when it ends,
and shown on the status page and in ``mt5fleet_agent_commands_held``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mt5fleet.client.adapters.disk import DiskUnavailable
from mt5fleet.client.adapters.execution import NothingSent, UnknownSymbol
from mt5fleet.client.adapters.ledger import CommandLedger, LedgerState
from mt5fleet.client.adapters.metrics import (
    STAGE_RECEIVED_TO_EXECUTED,
    STAGE_SIGNAL_TO_EXECUTED,
    STAGE_SIGNAL_TO_RECEIVED,
    STAGE_WORKER_TO_AGENT,
    AgentMetrics,
)
from mt5fleet.client.adapters.publisher import Publisher
from mt5fleet.client.adapters.terminal import TerminalError, TerminalUnavailable
from mt5fleet.client.app.outcomes import CommandFacts, Handled, Outcomes
from mt5fleet.client.core.orders import Outcome
from mt5fleet.client.core.risk import Decision, RejectCode
from mt5fleet.proto.domain.clock import Clock, now_ms
from mt5fleet.proto.domain.ids import magic_for
from mt5fleet.proto.domain.trading import Command
from mt5fleet.proto.v1 import commands_pb2
from mt5fleet.proto.validation import ValidationError, check_command, decode

log = logging.getLogger("mt5fleet.agent.commands")

# A duplicate arriving this long after the original is a resend worth reporting; sooner
# it is the live copy racing the catch-up copy of the same command.
DUPLICATE_REPORT_AFTER_MS = 60_000
RETRY_S = 1.0
# Beyond this many waiting commands the oldest leaves memory (with a warning): it stays in
# JetStream, and the catch-up after the next reconnect or restart reads it again.
MAX_HELD = 1_000


__all__ = ["CommandPipeline", "Handled", "Held", "HoldKind"]


class HoldKind(enum.StrEnum):
    """What commands wait for: a label of ``mt5fleet_agent_commands_held``."""

    TERMINAL = "terminal"
    DISK = "disk"


@dataclass(frozen=True)
class Held:
    kind: HoldKind
    detail: str
    since: float   # monotonic seconds


@dataclass
class Arrival:
    raw: bytes
    source: str
    received_ms: int      # when it first arrived: its report's received_at
    waited: bool = False  # it has been held at least once


class _Hold(Exception):
    def __init__(self, kind: HoldKind, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


# (command, now_ms) -> the risk decision, computed on the MT5 thread from live terminal state.
RiskGate = Callable[[Command, int], Awaitable[Decision]]
# (command) -> the outcome, run on the MT5 thread.
Execute = Callable[[Command], Awaitable[Outcome]]
# Settle what the ledger shows begun without an outcome, from the terminal (recovery).
Resolve = Callable[[], Awaitable[object]]


async def _nothing_to_resolve() -> None:
    return None


class CommandPipeline:
    def __init__(self, *, user_id: str, clock: Clock, ledger: CommandLedger, publisher: Publisher,
                 metrics: AgentMetrics, risk_gate: RiskGate, execute: Execute, resolve: Resolve = _nothing_to_resolve,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.user_id, self.clock, self.ledger, self.publisher, self.metrics = user_id, clock, ledger, publisher, metrics
        self.risk_gate, self.execute, self.resolve, self._monotonic = risk_gate, execute, resolve, monotonic
        self.queue: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
        self.outcomes = Outcomes(user_id=user_id, ledger=ledger, publisher=publisher, metrics=metrics,
                                 first_sequence=now_ms(clock))
        self.last_latency_ms = 0.0
        self.executed = 0
        self._held: deque[Arrival] = deque()
        self._in_doubt = True  # first settle whatever the ledger shows begun (a crash, a dropped terminal)
        self.blocked: Held | None = None
        self._tried_at = -math.inf

    # ---------------------------------------------------------------- intake
    def submit(self, raw: bytes, source: str) -> None:
        self.queue.put_nowait((raw, source))

    @property
    def recent(self) -> deque[Handled]:
        return self.outcomes.recent

    @property
    def rejected(self) -> int:
        return self.outcomes.rejected

    def requeue_unreported(self) -> None:
        self.outcomes.requeue_unreported()

    def on_report_stored(self, kind: str, msg_id: str) -> None:
        self.outcomes.on_report_stored(kind, msg_id)

    @property
    def held(self) -> int:
        """Commands waiting (not yet executed nor refused)."""
        return len(self._held)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self._has_work() and (self.blocked is None or self._monotonic() - self._tried_at >= RETRY_S):
                await self._work()
            try:
                raw, source = await asyncio.wait_for(self.queue.get(), timeout=RETRY_S / 2)
            except TimeoutError:
                continue
            self._keep(Arrival(raw, source, now_ms(self.clock)))

    def _has_work(self) -> bool:
        return bool(self._held or self.outcomes.pending or self._in_doubt)

    def _keep(self, arrival: Arrival) -> None:
        self._held.append(arrival)
        if len(self._held) > MAX_HELD:
            dropped = self._held.popleft()
            log.warning("%d commands wait: the oldest (received at %d) leaves memory; the next catch-up reads it "
                        "again from the stream", MAX_HELD, dropped.received_ms)

    async def _work(self) -> None:
        """Stored what waits to be stored, settle what is in doubt, then the waiting
        commands in order; stop at the first that must wait again."""
        self._tried_at = self._monotonic()
        try:
            self._store_unstored()
            await self._settle_in_doubt()
            while self._held:
                await self._attempt(self._held[0])
                self._held.popleft()
                self._store_unstored()
                await self._settle_in_doubt()
        except _Hold as hold:
            self._block(hold)
            if hold.kind is HoldKind.TERMINAL:
                self._refuse_expired_behind()
            return
        self._unblock()

    def _refuse_expired_behind(self) -> None:
        """Commands waiting behind the first whose expiry passed are refused now, saying
        why, rather than when the terminal is back: the server learns it in time."""
        now = now_ms(self.clock)
        kept = deque(list(self._held)[:1])
        for arrival in list(self._held)[1:]:
            arrival.waited = True
            try:
                command = self._parse(arrival.raw, arrival.received_ms)
                if command is None:
                    continue  # malformed: reported as such
                if self.ledger.get(command.command_id) is None and command.is_expired(now):
                    self._refuse(command, "EXPIRED", RejectCode.EXPIRED, self._expiry_reason(command, arrival, now),
                                 arrival.received_ms)
                    continue
            except DiskUnavailable:
                pass  # it keeps its place in line
            kept.append(arrival)
        self._held = kept

    async def _attempt(self, arrival: Arrival) -> None:
        """Handle one command; ``_Hold`` when it must wait (it stays first in line)."""
        try:
            await self.handle(arrival)
        except _Hold:
            arrival.waited = True
            raise
        except DiskUnavailable as exc:  # before any order: nothing was sent
            arrival.waited = True
            raise _Hold(HoldKind.DISK, str(exc)) from exc
        except Exception:  # one bad command must not stop the next good one
            log.exception("command handling failed")

    # ---------------------------------------------------------------- holding
    def _block(self, hold: _Hold) -> None:
        if self.blocked is None or self.blocked.kind is not hold.kind:
            log.warning("commands wait (%d held): %s", len(self._held), hold.detail)
            self.blocked = Held(hold.kind, hold.detail, self._monotonic())
        else:
            self.blocked = Held(hold.kind, hold.detail, self.blocked.since)
        self._show_held()

    def _unblock(self) -> None:
        if self.blocked is not None:
            log.info("commands run again after waiting %.0f s for the %s", self._monotonic() - self.blocked.since,
                     self.blocked.kind.value)
            self.blocked = None
        self._show_held()

    def _show_held(self) -> None:
        for kind in HoldKind:
            waiting = len(self._held) if self.blocked is not None and self.blocked.kind is kind else 0
            self.metrics.commands_held.labels(kind.value).set(waiting)

    def _store_unstored(self) -> None:
        try:
            self.outcomes.retry()
        except DiskUnavailable as exc:
            raise _Hold(HoldKind.DISK, f"a report waits in memory: {exc}") from exc

    async def _settle_in_doubt(self) -> None:
        if not self._in_doubt:
            return
        await self.resolve()
        left = self.ledger.in_flight()
        unsettled = [entry.command_id for entry in left if entry.command_id not in self.outcomes.pending]
        if unsettled:
            raise _Hold(HoldKind.TERMINAL, f"the outcome of {unsettled[0]} is unknown (the terminal dropped while "
                                           "it was sent): waiting for the terminal to show it")
        self._in_doubt = False

    # ---------------------------------------------------------------- one command
    async def handle(self, arrival: Arrival) -> None:
        received = arrival.received_ms
        command = self._parse(arrival.raw, received)
        if command is None:
            return
        entry = self.ledger.get(command.command_id)
        if entry is not None:
            self._duplicate(command, entry, arrival.source, received)
            return
        if not arrival.waited:
            self._observe_arrival(command, received)
        now = now_ms(self.clock)
        if command.is_expired(now):
            self._refuse(command, "EXPIRED", RejectCode.EXPIRED, self._expiry_reason(command, arrival, now), received)
            return
        try:
            decision = await self.risk_gate(command, now)
        except TerminalError as exc:  # nothing sent: the command waits for the terminal
            raise _Hold(HoldKind.TERMINAL, f"the MT5 terminal does not answer: {exc}") from exc
        if not decision.allowed:
            status = "EXPIRED" if decision.code is RejectCode.EXPIRED else "REJECTED"
            self._refuse(command, status, decision.code, decision.reason, received)
            return
        if not self.ledger.begin(command.command_id, magic=magic_for(command.command_id), stream_seq=None,
                                 received_at_ms=received):
            return  # raced by another copy of the same command: it owns the execution
        outcome = await self._execute(command)
        if outcome is not None:
            self._finish(command, outcome, received, decision.reason)

    def _expiry_reason(self, command: Command, arrival: Arrival, now: int) -> str:
        late = now - command.expires_at_ms
        if arrival.waited and self.blocked is not None:
            return f"expired {late} ms ago while it waited for the {self.blocked.kind.value}: {self.blocked.detail}"
        return f"arrived {late} ms after it expired"

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
        """Counted and reported when the command can be named at all; never raised. A
        malformed command refused before (its live copy and its catch-up copy both arrive)
        is neither counted nor reported again."""
        named = message is not None and message.command_id and message.user_id == self.user_id
        if named and self.ledger.get(message.command_id) is not None:
            return
        self.metrics.invalid.labels("TradingCommand").inc()
        log.warning("refused a malformed command: %s", problem)
        if not named:
            return
        self.ledger.begin(message.command_id, magic=0, stream_seq=None, received_at_ms=now_ms(self.clock))
        report = self.outcomes.reports.build(message.command_id, "REJECTED", received=now_ms(self.clock),
                                             reason=str(problem), reject_code=RejectCode.INVALID.value,
                                             message=message)
        self.outcomes.store_or_keep(message.command_id, report, "REJECTED", RejectCode.INVALID.value)

    def _duplicate(self, command: Command, entry: Any, source: str, received: int) -> None:
        self.metrics.commands.labels("duplicate").inc()
        late = received - entry.received_at_ms >= DUPLICATE_REPORT_AFTER_MS
        if source != "live" or not late or entry.state is LedgerState.BEGUN:
            return
        log.warning("command %s delivered again %d ms later: not executed twice", command.command_id,
                    received - entry.received_at_ms)
        report = self.outcomes.reports.build(command.command_id, "DUPLICATE", received=received, command=command,
                                             reason=f"already handled ({entry.status}); not executed again")
        self.outcomes.duplicate(command.command_id, report)

    def _refuse(self, command: Command, status: str, code: RejectCode | None, reason: str, received: int) -> None:
        self.ledger.begin(command.command_id, magic=magic_for(command.command_id), stream_seq=None,
                          received_at_ms=received)
        report = self.outcomes.reports.build(command.command_id, status, received=received, command=command,
                                             reason=reason, reject_code=code.value if code else "")
        self.outcomes.store_or_keep(command.command_id, report, status, code.value if code else status.lower(),
                                    facts=CommandFacts.of(command))

    async def _execute(self, command: Command) -> Outcome | None:
        """The outcome; None when it is unknown (settled later from the terminal). A
        command nothing of which was sent waits for the terminal to come back."""
        try:
            return await self.execute(command)
        except UnknownSymbol as exc:
            return Outcome.no_trade("REJECTED", str(exc))
        except NothingSent as exc:
            try:
                self.ledger.abandon(command.command_id)
            except DiskUnavailable:  # still begun: settled from the terminal (no trace: FAILED, never sent twice)
                self._in_doubt = True
                return None
            raise _Hold(HoldKind.TERMINAL, f"the MT5 terminal dropped before the order was sent: {exc}") from exc
        except TerminalUnavailable as exc:  # dropped mid-send: the terminal's history will say what happened
            log.warning("the MT5 terminal dropped while %s was sent (%s): its outcome is settled from the terminal",
                        command.command_id, exc)
            self._in_doubt = True
            return None
        except TerminalError as exc:  # the terminal refused the call itself: no order went out
            return Outcome.no_trade("FAILED", str(exc))

    def _finish(self, command: Command, outcome: Outcome, received: int, checked: str = "") -> None:
        executed = now_ms(self.clock)
        report = self.outcomes.reports.build(command.command_id, outcome.status, received=received,
                                             executed=executed, command=command, outcome=outcome)
        # The risk check's own words say what the lot risks: after "passed; ".
        lot_why = checked.partition("; ")[2]
        self.outcomes.store_or_keep(command.command_id, report, outcome.status,
                                    facts=CommandFacts.of(command, lot_why))
        if outcome.status in ("FILLED", "PARTIAL"):
            self.executed += 1
            self.metrics.command_latency.labels(STAGE_RECEIVED_TO_EXECUTED).observe((executed - received) / 1000)
            if command.signal_created_at_ms:
                # Clocks of two hosts: a fast fill can look negative; the heartbeat must not carry that.
                latency = max((executed - command.signal_created_at_ms) / 1000, 0.0)
                self.last_latency_ms = latency * 1000
                self.metrics.command_latency.labels(STAGE_SIGNAL_TO_EXECUTED).observe(latency)
            if outcome.fill_price is not None:
                for against, points in (("adjusted", outcome.slippage_points),
                                        ("reference", outcome.slippage_reference_points)):
                    self.metrics.slippage.labels(against).observe(points)
                    self.metrics.slippage_net.labels(against).inc(points)
        else:
            self.metrics.rejected.labels("broker" if outcome.status == "REJECTED" else "terminal").inc()

    def settle(self, entry: Any, outcome: Outcome, *, executed_ms: int | None = None) -> None:
        """Report a command left in flight by a crash or a dropped terminal (see ``recovery``);
        ``executed_ms``: when the terminal says it was done (UTC), else now."""
        if entry.command_id in self.outcomes.pending:
            return  # already settled; its report waits for the disk
        report = self.outcomes.reports.build(entry.command_id, outcome.status, received=entry.received_at_ms,
                                             executed=executed_ms or now_ms(self.clock), outcome=outcome)
        self.outcomes.store_or_keep(entry.command_id, report, outcome.status)

    def _observe_arrival(self, command: Command, received: int) -> None:
        if command.created_at_ms:
            self.metrics.command_latency.labels(STAGE_WORKER_TO_AGENT).observe(
                max(received - command.created_at_ms, 0) / 1000)
        if command.signal_created_at_ms:
            self.metrics.command_latency.labels(STAGE_SIGNAL_TO_RECEIVED).observe(
                max(received - command.signal_created_at_ms, 0) / 1000)

"""What an adjustment worker knows about every user, rebuilt from JetStream on start and
kept current: the latest broker quotes (TC_PRICES), symbol specs (TC_SYMBOLS), account
(TC_ACCOUNT), positions opened per signal and the daily stop-out (TC_EXECUTIONS:
``workers.core.stop_out`` reads it from the agent's reports) and each user's policy (KV
tc-config).

A ClientConfig is decoded, checked and turned into a ``UserPolicy`` once, when its KV entry
changes, not per signal: a fan-out over thousands of users reads ready policies. A config
that is refused (malformed, nonsense numbers, stored under another user's key) is counted
and the user keeps the last good policy.

Each stream (and the config bucket's) is read by one ``Follower`` (proto/runtime/follow.py)
that starts with the last message per subject (executions: the last 7 days) and then
follows live, so a restarted worker has every user's state within moments. A follower
comes back by itself from a NATS restart, a consumer deleted behind its back or a stream
recreated (a memory stream comes back empty at sequence 1: it starts from the new
stream's beginning, so prices flow again as soon as the agents republish); it resumes the
executions after the last report it applied, so no position is forgotten or counted
twice. Bad messages are counted by kind and skipped; they never stop a stream.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.account import AccountSnapshot
from mt5fleet.proto.domain.market import Quote, SymbolSpecInfo
from mt5fleet.proto.domain.trading import CommandType, Execution, ExecutionStatus
from mt5fleet.proto.runtime.follow import (
    Follower,
    FollowOptions,
    FromTime,
    LastPerSubject,
    StartPosition,
    wall_ms,
)
from mt5fleet.proto.v1 import account_pb2, config_pb2, execution_pb2, prices_pb2, symbols_pb2
from mt5fleet.proto.validation import (
    ValidationError,
    check_account,
    check_client_config,
    check_execution,
    check_price_batch,
    check_symbol_specs,
    decode,
)
from mt5fleet.workers.core.adjust import close_command_id
from mt5fleet.workers.core.policy import PositionRef, UserPolicy, UserState, policy_from_config
from mt5fleet.workers.core.stop_out import StopOut, after_report

log = logging.getLogger("mt5fleet.worker.state")

# How far back the positions index reads execution reports on start.
POSITIONS_LOOKBACK_MS = 7 * 86_400_000

Invalid = Callable[[str, str], None]
Ensure = Callable[[str], Awaitable[object]]   # a missing stream of the layout, by name, created again
# The KV header saying an entry was deleted or purged.
KV_OPERATION = "KV-Operation"


class FleetState:
    def __init__(self, *, now_ms: Callable[[], int], on_invalid: Invalid = lambda kind, why: None,
                 on_applied: Callable[[str], None] = lambda stream: None) -> None:
        self.now_ms = now_ms
        self.on_invalid = on_invalid
        self.on_applied = on_applied    # one message of a stream handled (the ingest metric)
        self.policies: dict[str, UserPolicy] = {}
        self.quotes: dict[str, dict[str, Quote]] = defaultdict(dict)
        self.specs: dict[str, dict[str, SymbolSpecInfo]] = {}
        self.accounts: dict[str, AccountSnapshot] = {}
        self.positions: dict[str, PositionBook] = {}
        self.stopped_out: dict[str, StopOut] = {}      # user -> the stop-out their agent reported
        self.followers: dict[str, Follower] = {}       # stream -> its follower

    # ------------------------------------------------------------------ queries
    def users(self, partition: int | None = None, partitions: int = subjects.ADJUST_PARTITIONS) -> list[str]:
        """Users with a config, of one partition or all. The operator writes the same
        partition into ClientConfig.worker_shard; both come from subjects.partition_of."""
        return [uid for uid in self.policies
                if partition is None or subjects.partition_of(uid, partitions) == partition]

    def user_state(self, user_id: str) -> UserState:
        book = self.positions.get(user_id)
        return UserState(policy=self.policies[user_id], quotes=self.quotes.get(user_id, {}),
                         specs=self.specs.get(user_id, {}), account=self.accounts.get(user_id),
                         stopped_out=self.is_stopped_out(user_id),
                         positions_by_signal=book.by_signal() if book is not None else {},
                         position_volumes=book.volumes() if book is not None else {})

    def is_stopped_out(self, user_id: str) -> bool:
        stop = self.stopped_out.get(user_id)
        return stop is not None and stop.is_active(self.now_ms())

    # ------------------------------------------------------------------ following JetStream
    async def follow(self, nc: Any, *, ensure: Ensure | None = None, options: FollowOptions | None = None) -> None:
        """Start one follower per stream; ``ensure(stream)`` re-creates a missing one."""
        follow: list[tuple[str, Callable[[Any], None], Callable[[], StartPosition]]] = [
            (subjects.PRICES_STREAM, _guarded(self.on_prices), LastPerSubject),
            (subjects.SYMBOLS_STREAM, _guarded(self.on_specs), LastPerSubject),
            (subjects.ACCOUNT_STREAM, _guarded(self.on_account), LastPerSubject),
            (subjects.EXECUTIONS_STREAM, _guarded(self.on_execution), executions_start),
            (subjects.config_stream_name(), self.on_config_entry, LastPerSubject),
        ]
        for stream, handler, start in follow:
            counted = _counted(handler, functools.partial(self.on_applied, stream))
            self.followers[stream] = await Follower(
                nc, stream, counted, start=start, options=options,
                ensure=functools.partial(ensure, stream) if ensure is not None else None).start()

    async def close(self) -> None:
        for follower in self.followers.values():
            await follower.stop()

    # ------------------------------------------------------------------ handlers (also used by tests)
    def on_config_entry(self, message: Any) -> None:
        """A KV entry of ``tc-config`` as its stream delivers it: ``$KV.tc-config.<uid>``."""
        user_id = message.subject.rpartition(".")[2]
        if (message.headers or {}).get(KV_OPERATION) in ("DEL", "PURGE") or not message.data:
            self.policies.pop(user_id, None)
            return
        self.on_config(user_id, message.data)

    def on_config(self, user_id: str, raw: bytes) -> None:
        """``user_id`` is the KV key: a config naming another user is refused."""
        try:
            config = check_client_config(decode(config_pb2.ClientConfig, raw), self.now_ms(), key=user_id)
            policy = policy_from_config(config)
        except ValueError as exc:  # ValidationError, or a number UserPolicy refuses
            self.on_invalid("ClientConfig", str(exc))
            return
        self.policies[user_id] = policy

    def on_prices(self, subject: str, raw: bytes) -> None:
        user_id, _ = subjects.parse_user_subject(subject)
        checked = check_price_batch(decode(prices_pb2.ClientPriceStream, raw), self.now_ms())
        for violation in checked.rejected:
            self.on_invalid("ClientPrice", str(violation))
        book = self.quotes[user_id]
        for quote in checked.batch.quotes:
            if quote.symbol not in book or book[quote.symbol].time_ms <= quote.time_ms:
                book[quote.symbol] = quote

    def on_specs(self, subject: str, raw: bytes) -> None:
        user_id, _ = subjects.parse_user_subject(subject)
        specs = check_symbol_specs(decode(symbols_pb2.SymbolSpecList, raw), self.now_ms())
        for violation in specs.rejected:
            self.on_invalid("SymbolSpec", str(violation))
        self.specs[user_id] = {spec.symbol: spec for spec in specs.specs}

    def on_account(self, subject: str, raw: bytes) -> None:
        user_id, _ = subjects.parse_user_subject(subject)
        self.accounts[user_id] = check_account(decode(account_pb2.AccountProfile, raw), self.now_ms())

    def on_execution(self, subject: str, raw: bytes) -> None:
        user_id, _ = subjects.parse_user_subject(subject)
        report = check_execution(decode(execution_pb2.ExecutionReport, raw), self.now_ms())
        self.positions.setdefault(user_id, PositionBook(user_id)).apply(report)
        stop = after_report(self.stopped_out.get(user_id), report, user_id)
        if stop is None:
            self.stopped_out.pop(user_id, None)
        else:
            self.stopped_out[user_id] = stop


@dataclass(slots=True)
class OpenPosition:
    """One MT5 position the fleet's commands opened, as the agent's reports tell it."""

    ticket: int
    symbol: str | None
    volume: float                                                       # lots still open
    opened_by: list[tuple[str, str]] = field(default_factory=list)      # (signal id, command id) per opening
    counted: set[str] = field(default_factory=set)                      # command ids already applied


class PositionBook:
    """One user's open positions by ticket, kept from that user's execution reports. No I/O.

    * A FILLED/PARTIAL opening report with a position ticket adds its filled volume (a
      second opening on the same ticket, a netting account adding to its one position,
      adds to it and lists the position under that signal too).
    * A FILLED/PARTIAL CLOSE report takes its filled volume off the position it names: by
      ticket, or, when the agent names none (on a netting account the closing deal names
      no position), by the close command id, which is derived from (signal, user, ticket).
      A position with nothing left is dropped.
    * A FILLED CLOSE_ALL drops every position of its symbol (all, without a symbol). A
      PARTIAL one drops none: the report does not say which closed, and a later close the
      agent refuses ("no open position matches") costs less than an open position the
      index forgot.
    * A report is applied once per command id, so reading the stream twice changes nothing.

    Positions closed by the broker (SL/TP hit) or by the agent itself (stop-out, weekend
    close) send no report; a close for them is refused by the agent, harmlessly.
    """

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.positions: dict[int, OpenPosition] = {}

    def apply(self, report: Execution) -> None:
        if report.status not in (ExecutionStatus.FILLED, ExecutionStatus.PARTIAL):
            return
        if report.command_type.opens:
            self._opened(report)
        elif report.command_type is CommandType.CLOSE_POSITION:
            self._closed(report)
        elif report.command_type is CommandType.CLOSE_ALL and report.status is ExecutionStatus.FILLED:
            self.positions = {ticket: position for ticket, position in self.positions.items()
                              if report.symbol is not None and position.symbol != report.symbol}

    def by_signal(self) -> dict[str, tuple[PositionRef, ...]]:
        refs: dict[str, list[PositionRef]] = defaultdict(list)
        for position in self.positions.values():
            for signal_id, command_id in position.opened_by:
                refs[signal_id].append((command_id, position.ticket))
        return {signal_id: tuple(pairs) for signal_id, pairs in refs.items()}

    def volumes(self) -> dict[int, float]:
        return {ticket: position.volume for ticket, position in self.positions.items()}

    def _opened(self, report: Execution) -> None:
        if not (report.signal_id and report.position_ticket):
            return  # a placed pending order: no position yet, nothing to close
        position = self.positions.setdefault(
            report.position_ticket, OpenPosition(report.position_ticket, report.symbol, 0.0))
        if report.command_id in position.counted:
            return
        position.counted.add(report.command_id)
        position.opened_by.append((report.signal_id, report.command_id))
        position.volume = round(position.volume + report.filled_volume, 8)

    def _closed(self, report: Execution) -> None:
        position = self._closed_position(report)
        if position is None or report.command_id in position.counted:
            return
        position.counted.add(report.command_id)
        position.volume = round(position.volume - report.filled_volume, 8)
        if position.volume <= 0:
            del self.positions[position.ticket]

    def _closed_position(self, report: Execution) -> OpenPosition | None:
        if report.position_ticket:
            return self.positions.get(report.position_ticket)
        if not report.signal_id:
            return None
        return next((position for ticket, position in self.positions.items()
                     if close_command_id(report.signal_id, self.user_id, ticket) == report.command_id), None)


def executions_start() -> StartPosition:
    """Where the positions index starts reading (again, if the stream was recreated): the
    reports the server stored in the last 7 days, by its own clock."""
    return FromTime(wall_ms() - POSITIONS_LOOKBACK_MS)


def _counted(handler: Callable[[Any], None], applied: Callable[[], None]) -> Callable[[Any], None]:
    def handle(message: Any) -> None:
        applied()
        handler(message)
    return handle


def _guarded(handler: Callable[[str, bytes], None]) -> Callable[[Any], None]:
    def handle(message: Any) -> None:
        try:
            handler(message.subject, message.data)
        except (ValidationError, subjects.InvalidName) as exc:
            kind = getattr(exc, "kind", "subject")
            log.warning("skipped a bad %s message on %s: %s", kind, message.subject, exc)
            state = getattr(handler, "__self__", None)
            if state is not None:
                state.on_invalid(kind, str(exc))
    return handle

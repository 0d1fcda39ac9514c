"""What an adjustment worker knows about every user, rebuilt from JetStream on start and
kept current: the latest broker quotes (TC_PRICES), symbol specs (TC_SYMBOLS), account
(TC_ACCOUNT), positions opened per signal and the daily stop-out (TC_EXECUTIONS:
``workers.core.stop_out`` reads it from the agent's reports) and each user's policy (KV
tc-config).

A ClientConfig is decoded, checked and turned into a ``UserPolicy`` once, when its KV entry
changes, not per signal: a fan-out over thousands of users reads ready policies. A config
that is refused (malformed, nonsense numbers, stored under another user's key) is counted
and the user keeps the last good policy.

Scale-out (issue 15): a worker replica keeps decoded state only for the users of the
partitions it owns (``take``/``release``, driven by its leases). TC_PRICES, the one stream
every agent writes every second, is read per owned partition by a follower whose consumer
filters on that partition's users' literal subjects (``filter_subjects``, nats-server
2.10+; the users are those with a config, which every replica sees), so the server never
sends a replica the other partitions' prices. When a partition's users change, its
follower is replaced by one with the new filter (``refilter``). Configs, specs and accounts
(written on change, or once a minute) are followed whole, but another partition's message
is only kept as bytes (a dict store) and decoded when the partition is taken over.
Execution reports are applied for every user (their rate is the commands' rate, and a
position book is smaller than the reports behind it). Without ``take`` (``owned`` None:
benchmarks, tests that fill the state by hand) every user is decoded, as before; so is
every price batch on a server older than 2.10 (no ``filter_subjects``).

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

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.account import AccountSnapshot
from mt5fleet.proto.domain.calendar import EMPTY as NO_CALENDAR
from mt5fleet.proto.domain.calendar import Calendar, NewsWindow
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

DEFAULT_WINDOW = NewsWindow()

# How far back the positions index reads execution reports on start.
POSITIONS_LOOKBACK_MS = 7 * 86_400_000

Invalid = Callable[[str, str], None]
Ensure = Callable[[str], Awaitable[object]]   # a missing stream of the layout, by name, created again
# The KV header saying an entry was deleted or purged.
KV_OPERATION = "KV-Operation"
# How long taking over a partition waits for the state streams and its prices to be read.
TAKE_OVER_WAIT_S = 10.0
CONFIGS, SPECS, ACCOUNTS = "configs", "specs", "accounts"


class FollowerGroup:
    """The followers of one stream, one per owned partition (TC_PRICES filtered on
    ``tc.*.prices.<p>``), seen from outside as one follower: health, sequences, resets."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.parts: dict[int, Follower] = {}
        self._past_resets = 0
        self._past_last = 0

    @property
    def last_sequence(self) -> int:
        return max([self._past_last, *(f.last_sequence for f in self.parts.values())])

    @property
    def position(self) -> int:
        return min((f.position for f in self.parts.values()), default=self._past_last)

    @property
    def resets(self) -> int:
        return self._past_resets + sum(f.resets for f in self.parts.values())

    @property
    def consumer(self) -> str | None:
        return next((f.consumer for f in self.parts.values()), None)

    @property
    def following(self) -> bool:
        return all(f.following for f in self.parts.values())

    def problem(self, budget_s: float) -> str | None:
        problems = [p for f in self.parts.values() if (p := f.problem(budget_s)) is not None]
        return "; ".join(problems) or None

    async def caught_up(self, timeout_s: float, **options: Any) -> bool:
        results = await asyncio.gather(*(f.caught_up(timeout_s, **options) for f in self.parts.values()))
        return all(results)

    async def remove(self, partition: int) -> None:
        follower = self.parts.pop(partition, None)
        if follower is not None:
            self._past_resets += follower.resets
            self._past_last = max(self._past_last, follower.last_sequence)
            await follower.stop()

    async def stop(self) -> None:
        for partition in list(self.parts):
            await self.remove(partition)


class FleetState:
    def __init__(self, *, now_ms: Callable[[], int], on_invalid: Invalid = lambda kind, why: None,
                 on_applied: Callable[[str], None] = lambda stream: None,
                 partitions: int = subjects.ADJUST_PARTITIONS) -> None:
        self.now_ms = now_ms
        self.partitions = partitions
        # The platform's economic calendar and news window, the same for every user: none
        # until a calendar is followed (workers/app/news.py sets this).
        self.news: Callable[[], tuple[Calendar, NewsWindow]] = lambda: (NO_CALENDAR, DEFAULT_WINDOW)
        # The partitions whose users are decoded; None: every user (nothing shared out).
        self.owned: set[int] | None = None
        # The last bytes of each user's config, specs and account, by kind and partition:
        # what a take-over decodes without reading the streams again.
        self._raw: dict[str, dict[int, dict[str, bytes]]] = {
            kind: defaultdict(dict) for kind in (CONFIGS, SPECS, ACCOUNTS)}
        self._taking: set[int] = set()    # being taken over: prices read, the rest not decoded yet
        self.partitioned_prices = False   # TC_PRICES is read per owned partition
        self._price_filters: dict[int, frozenset[str]] = {}   # partition -> the users its follower reads
        self._refilter_task: asyncio.Task | None = None
        self._price_lock = asyncio.Lock()
        self._follow_args: tuple[Any, Ensure | None, FollowOptions | None] | None = None
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

    def owns(self, user_id: str) -> bool:
        return self.owned is None or subjects.partition_of(user_id, self.partitions) in self.owned

    def user_state(self, user_id: str) -> UserState:
        book = self.positions.get(user_id)
        calendar, window = self.news()
        return UserState(policy=self.policies[user_id], quotes=self.quotes.get(user_id, {}),
                         specs=self.specs.get(user_id, {}), account=self.accounts.get(user_id),
                         stopped_out=self.is_stopped_out(user_id),
                         positions_by_signal=book.by_signal() if book is not None else {},
                         position_volumes=book.volumes() if book is not None else {},
                         calendar=calendar, news_window=window)

    def is_stopped_out(self, user_id: str) -> bool:
        stop = self.stopped_out.get(user_id)
        return stop is not None and stop.is_active(self.now_ms())

    # ------------------------------------------------------------------ following JetStream
    async def follow(self, nc: Any, *, ensure: Ensure | None = None, options: FollowOptions | None = None,
                     shared: bool = False) -> None:
        """Start one follower per stream; ``ensure(stream)`` re-creates a missing one.
        ``shared``: this replica shares users with others; it decodes only the partitions
        it ``take``s, and follows only their prices when TC_PRICES carries partitions."""
        self._follow_args = (nc, ensure, options)
        follow: list[tuple[str, Callable[[Any], None], Callable[[], StartPosition]]] = []
        if shared:
            self.owned = set()
            self.partitioned_prices = await self._prices_partitioned(nc, ensure)
        if self.partitioned_prices:
            self.followers[subjects.PRICES_STREAM] = FollowerGroup(subjects.PRICES_STREAM)  # type: ignore[assignment]
            self._refilter_task = asyncio.create_task(self._refilter(), name="prices-refilter")
        else:
            follow.append((subjects.PRICES_STREAM, _guarded(self.on_prices), LastPerSubject))
        follow += [
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
        if self._refilter_task is not None:
            self._refilter_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refilter_task
        for follower in self.followers.values():
            await follower.stop()

    async def _prices_partitioned(self, nc: Any, ensure: Ensure | None) -> bool:
        """True when the server takes a consumer filter of many subjects (2.10+); else the
        whole prices stream is followed and every user decoded, as before."""
        try:
            version = nc.connected_server_version
            if (version.major, version.minor) >= (2, 10):
                return True
        except Exception as exc:  # not connected yet: the whole stream, which recovers by itself
            log.warning("server version unknown (%s): following every user's prices", exc)
            return False
        log.warning("nats-server %s takes no multi-subject consumer filter: following every user's prices", version)
        return False

    # ------------------------------------------------------------------ partitions owned
    async def take(self, partition: int, *, timeout_s: float = TAKE_OVER_WAIT_S) -> bool:
        """Own ``partition``: its users' state decoded, their prices followed and read up to
        now, the state streams read up to now. False if that took longer than ``timeout_s``
        (the caller goes on: what is missing is a counted skip, never a wrong command)."""
        if self.owned is None:
            return True
        self._taking.add(partition)
        await asyncio.sleep(0)
        state_followers = [f for stream, f in self.followers.items() if stream != subjects.PRICES_STREAM]
        caught_up = await asyncio.gather(*(f.caught_up(timeout_s) for f in state_followers), return_exceptions=True)
        ready = all(result is True for result in caught_up)  # an unanswered stream info: go on, not ready
        if partition not in self._taking:
            return False  # released meanwhile
        if self.partitioned_prices:
            # Prices first: a user is known (has a policy) only once their quotes are read.
            try:
                ready = await self._follow_prices(partition, timeout_s) and ready
            except Exception as exc:  # NATS slow or away: the refilter round starts it again
                log.warning("following partition %d's prices failed: %s", partition, exc)
                self._price_filters.pop(partition, None)
                ready = False
        if partition not in self._taking:
            return False  # released meanwhile
        self._taking.discard(partition)
        self.owned.add(partition)  # from now on its messages are decoded as they come
        for kind, apply in ((CONFIGS, self.on_config), (SPECS, self._apply_specs), (ACCOUNTS, self._apply_account)):
            for user_id, raw in list(self._raw[kind][partition].items()):
                self._decode(kind, apply, user_id, raw)
        return ready

    def _members(self, partition: int) -> frozenset[str]:
        """The partition's users: those with a config (kept as bytes for every partition)."""
        return frozenset(self._raw[CONFIGS][partition])

    async def _follow_prices(self, partition: int, timeout_s: float) -> bool:
        """(Re)start the partition's price follower on its users' subjects, read it up to
        now, then stop the follower it replaces (quotes keep flowing meanwhile)."""
        # One at a time: creating a consumer on thousands of subjects costs the server a
        # few hundred ms under ingest, and eight at once starve its JetStream API.
        async with self._price_lock:
            return await self._follow_prices_now(partition, timeout_s)

    async def _follow_prices_now(self, partition: int, timeout_s: float) -> bool:
        group = self.followers.get(subjects.PRICES_STREAM)
        if not isinstance(group, FollowerGroup) or self._follow_args is None:
            return True
        members = self._members(partition)
        old = group.parts.get(partition)
        if old is not None and self._price_filters.get(partition) == members:
            return await old.drained(timeout_s)
        self._price_filters[partition] = members
        if not members:
            await group.remove(partition)
            return True
        nc, ensure, options = self._follow_args
        counted = _counted(_guarded(self.on_prices), functools.partial(self.on_applied, subjects.PRICES_STREAM))
        follower = Follower(nc, subjects.PRICES_STREAM, counted, start=LastPerSubject, options=options,
                            ensure=functools.partial(ensure, subjects.PRICES_STREAM) if ensure else None,
                            filter_subjects=tuple(sorted(subjects.user_subject(uid, subjects.Channel.PRICES)
                                                         for uid in members)),
                            label=f"partition {partition}, {len(members)} users")
        await follower.start()
        drained = await follower.drained(timeout_s)
        if partition not in (self.owned or set()) | self._taking:  # released meanwhile
            await follower.stop()
            return False
        if old is not None:
            group._past_resets += old.resets
            await old.stop()
        group.parts[partition] = follower
        return drained

    async def _refilter(self, every_s: float = 1.0) -> None:
        """Owned partitions whose users changed (a config added or deleted) get a follower
        with the new filter, at most once per ``every_s``."""
        while True:
            await asyncio.sleep(every_s)
            for partition in sorted(self.owned or ()):
                if self._price_filters.get(partition) != self._members(partition):
                    try:
                        await self._follow_prices(partition, TAKE_OVER_WAIT_S)
                    except Exception as exc:  # NATS away: the next round tries again
                        log.warning("re-filtering partition %d's prices failed: %s", partition, exc)

    async def release(self, partition: int) -> None:
        """Stop following ``partition``: its users' decoded state goes (their bytes stay)."""
        if self.owned is None:
            return
        self.owned.discard(partition)
        self._taking.discard(partition)
        gone = [uid for uid in self.policies if subjects.partition_of(uid, self.partitions) == partition]
        gone += [uid for table in (self.specs, self.accounts) for uid in table
                 if subjects.partition_of(uid, self.partitions) == partition]
        for user_id in gone:
            self.policies.pop(user_id, None)
            self.specs.pop(user_id, None)
            self.accounts.pop(user_id, None)
        if self.partitioned_prices:
            for user_id in [uid for uid in self.quotes if subjects.partition_of(uid, self.partitions) == partition]:
                del self.quotes[user_id]
            group = self.followers.get(subjects.PRICES_STREAM)
            self._price_filters.pop(partition, None)
            if isinstance(group, FollowerGroup):
                await group.remove(partition)

    def _keep(self, kind: str, user_id: str, raw: bytes | None) -> bool:
        """Keeps the message's bytes; True if this replica decodes the user now."""
        table = self._raw[kind][subjects.partition_of(user_id, self.partitions)]
        if raw is None:
            table.pop(user_id, None)
        else:
            table[user_id] = raw
        return self.owns(user_id)

    def _decode(self, kind: str, apply: Callable[[str, bytes], None], user_id: str, raw: bytes) -> None:
        try:
            apply(user_id, raw)
        except (ValidationError, subjects.InvalidName) as exc:
            self.on_invalid(getattr(exc, "kind", kind), str(exc))

    # ------------------------------------------------------------------ handlers (also used by tests)
    def on_config_entry(self, message: Any) -> None:
        """A KV entry of ``tc-config`` as its stream delivers it: ``$KV.tc-config.<uid>``."""
        user_id = message.subject.rpartition(".")[2]
        if (message.headers or {}).get(KV_OPERATION) in ("DEL", "PURGE") or not message.data:
            self.policies.pop(user_id, None)
            if self.owned is not None:
                self._keep(CONFIGS, user_id, None)
            return
        if self.owned is not None and not self._keep(CONFIGS, user_id, message.data):
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
        if self.partitioned_prices and not self.owns(user_id) and \
                subjects.partition_of(user_id, self.partitions) not in self._taking:
            return  # a partition just released: its follower is being stopped
        checked = check_price_batch(decode(prices_pb2.ClientPriceStream, raw), self.now_ms())
        for violation in checked.rejected:
            self.on_invalid("ClientPrice", str(violation))
        book = self.quotes[user_id]
        for quote in checked.batch.quotes:
            if quote.symbol not in book or book[quote.symbol].time_ms <= quote.time_ms:
                book[quote.symbol] = quote

    def on_specs(self, subject: str, raw: bytes) -> None:
        user_id, _ = subjects.parse_user_subject(subject)
        if self.owned is not None and not self._keep(SPECS, user_id, raw):
            return
        self._apply_specs(user_id, raw)

    def _apply_specs(self, user_id: str, raw: bytes) -> None:
        specs = check_symbol_specs(decode(symbols_pb2.SymbolSpecList, raw), self.now_ms())
        for violation in specs.rejected:
            self.on_invalid("SymbolSpec", str(violation))
        self.specs[user_id] = {spec.symbol: spec for spec in specs.specs}

    def on_account(self, subject: str, raw: bytes) -> None:
        user_id, _ = subjects.parse_user_subject(subject)
        if self.owned is not None and not self._keep(ACCOUNTS, user_id, raw):
            return
        self._apply_account(user_id, raw)

    def _apply_account(self, user_id: str, raw: bytes) -> None:
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

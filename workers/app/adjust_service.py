"""The adjustment worker: for each UniversalSignal, one broker-adjusted TradingCommand per
eligible user of the partitions this replica owns.

Scale-out: users fall into fixed partitions (``subjects.partition_of``); each partition
has a durable consumer on SIGNALS; a replica pulls only from the partitions whose lease it
holds (``leases``). A signal is acknowledged on a partition once every command for that
partition's users is stored by JetStream. If the replica dies first, the signal is
redelivered to the next owner, which recomputes the same command ids (deterministic per
signal and user): JetStream's duplicate window drops what was already stored, so no user
gets a signal twice and none is lost.

Audit: every (signal, user) of a partition, skipped or not, gets one decision record
(``decision_store``) before its commands are published, and the commands published are
those of the stored record: on a redelivery, the first delivery's, so a command always
matches the record that explains it.

Recovery (issue 12): the fleet state's followers come back by themselves from a NATS
restart, a stream recreated at sequence 1 or a consumer deleted behind their back; a
missing lease bucket, partition consumer, or stream to publish into is created again from
the JetStream layout (``bootstrap.create_missing``). ``health`` says on ``/readyz`` when
this replica has not done its job for longer than its budget: no lease renewed within 3x
the ttl, no prices seen while the prices stream has them, an owned partition failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

import nats.errors
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.trading import CommandType, Signal
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.errors import describe
from mt5fleet.proto.runtime.follow import FollowOptions
from mt5fleet.proto.runtime.probes import Health
from mt5fleet.proto.runtime.tasks import cancel_and_wait, within
from mt5fleet.proto.subjects import JetStreamLayout
from mt5fleet.proto.v1 import commands_pb2, signals_pb2
from mt5fleet.proto.validation import ValidationError, check_signal, decode
from mt5fleet.workers.adapters import wire
from mt5fleet.workers.adapters.decision_store import DecisionStore
from mt5fleet.workers.adapters.durable import DurablePuller
from mt5fleet.workers.adapters.fleet_state import FleetState
from mt5fleet.workers.adapters.leases import LeaseKeeper
from mt5fleet.workers.adapters.metrics import AdjustMetrics
from mt5fleet.workers.adapters.streams import BatchPublisher, StreamPublisher
from mt5fleet.workers.core.decision import ERROR, Decision, decide

log = logging.getLogger("mt5fleet.worker.adjust")

FETCH_BATCH = 16
# A JetStream leader election or a client reconnect takes a few seconds: ~8 s of retries.
RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0)
# Signals decided on the user's open positions, and how long they wait for the positions
# follower to read what the stream holds (a node loss takes it ~4 s to notice and resume).
POSITION_ACTIONS = frozenset({CommandType.CLOSE_POSITION, CommandType.MODIFY_POSITION, CommandType.CLOSE_ALL})
POSITIONS_WAIT_S = 8.0
TRANSIENT_PUBLISH_ERRORS = (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                            nats.errors.ConnectionReconnectingError, NoStreamResponseError, ServiceUnavailableError)
T = TypeVar("T")
PUBLISH_CONCURRENCY = 256
# Users adjusted between two chances for their commands to be published: a small first
# chunk, so that the first commands leave while the rest is adjusted.
FIRST_CHUNK = 16
FAN_OUT_CHUNK = 64


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class AdjustBudgets:
    """How long each part of the job may go undone before ``/readyz`` says so (seconds).
    Leases have no budget of their own here: 3x the lease ttl."""

    prices_s: float = 15.0       # the prices stream holds batches this replica has not seen
    state_s: float = 60.0        # the same for symbols, accounts, executions and configs
    partitions_s: float = 30.0   # pulling from an owned partition keeps failing
    wedged_s: float = 300.0      # any of these, while NATS is connected: only a restart helps


# The fleet-state followers and the readiness check each one answers.
STATE_CHECKS = {
    subjects.PRICES_STREAM: "prices", subjects.SYMBOLS_STREAM: "symbols", subjects.ACCOUNT_STREAM: "accounts",
    subjects.EXECUTIONS_STREAM: "positions", subjects.config_stream_name(): "configs",
}


def _version() -> str:
    try:
        return metadata.version("mt5fleet")
    except metadata.PackageNotFoundError:  # a bare checkout
        return "0+unknown"


class AdjustWorker:
    def __init__(self, nc: Any, *, replica_id: str | None = None, partitions: int = subjects.ADJUST_PARTITIONS,
                 lease_ttl_ms: int = 10_000, now_ms: Callable[[], int] = wall_ms,
                 metrics: AdjustMetrics | None = None,
                 on_skip: Callable[[str, str, str], None] | None = None,
                 layout: JetStreamLayout | None = None, follow_options: FollowOptions | None = None,
                 budgets: AdjustBudgets | None = None, clock: Callable[[], float] = time.monotonic,
                 settle_heap: bool = False) -> None:
        self.nc, self.js = nc, nc.jetstream()
        # GC policy is the process's: on for a replica in a process of its own (the runner),
        # off where a replica shares its process (tests, the demo).
        self.settle_heap = settle_heap
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.partitions = partitions
        self.lease_ttl_ms = lease_ttl_ms
        self.now_ms = now_ms
        self.metrics = metrics or AdjustMetrics()
        self.layout = layout or JetStreamLayout()
        self.follow_options = follow_options
        self.budgets = budgets or AdjustBudgets()
        self.clock = clock
        self.on_skip = on_skip or (lambda signal_id, user_id, reason: None)  # (signal, user, reason)
        self.state = FleetState(now_ms=now_ms, on_invalid=lambda kind, why: self.metrics.invalid.labels(kind).inc(),
                                on_applied=lambda stream: self.metrics.state_messages.labels(stream).inc(),
                                partitions=partitions)
        self.publisher = StreamPublisher(self.js, self.layout, on_recreated=self._recreated)
        self.batch = BatchPublisher(nc)
        self.decisions = DecisionStore(self.js, worker_version=_version(), worker_replica=self.replica_id,
                                       on_recorded=lambda outcome: self.metrics.decisions.labels(outcome).inc(),
                                       publish=self.publisher.publish)
        self.health = Health(registry=self.metrics.registry, connected=lambda: nc.is_connected)
        self.owned: dict[int, asyncio.Task] = {}
        self.pullers: dict[int, DurablePuller] = {}
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()
        self._keeper: LeaseKeeper | None = None
        self._heap_settled = False    # the first take-over collects before it freezes (_settle_heap)
        self._leases_renewed = clock()
        self._lease_error = ""
        self._publish_slots = asyncio.Semaphore(PUBLISH_CONCURRENCY)
        self._repairing: dict[str, asyncio.Lock] = {}
        self._deciding = asyncio.Lock()

    async def start(self) -> None:
        # Shared: only the owned partitions' users are decoded, only their prices followed.
        await self.state.follow(self.nc, ensure=self._create_missing, options=self.follow_options, shared=True)
        self._leases_renewed = self.clock()
        self._tasks.append(asyncio.create_task(self._keep_leases(), name="leases"))
        self._add_checks()

    async def stop(self, *, release: bool = True) -> None:
        """Stop pulling; with ``release`` hand the partitions over at once (SIGTERM)."""
        self._stop.set()
        await cancel_and_wait([*self.owned.values(), *self._tasks])
        self.owned.clear()
        if release and self._keeper is not None:
            await within(self._keeper.release_all(self.now_ms()), timeout=5)
        await self.state.close()
        await within(self.batch.close(), timeout=2)

    async def _create_missing(self, name: str) -> None:
        # One at a time per name: the followers of several partitions find TC_PRICES gone
        # together, and a create racing an identical one also succeeds (counted twice).
        async with self._repairing.setdefault(name, asyncio.Lock()):
            if (await bootstrap.create_missing(self.js, self.layout, name)).action is bootstrap.Action.CREATED:
                self._recreated(name)

    def _recreated(self, name: str) -> None:
        self.metrics.recreated.labels(name).inc()

    # ------------------------------------------------------------------ health
    def _add_checks(self) -> None:
        budgets, wedged = self.budgets, self.budgets.wedged_s
        self.health.add("leases", self._lease_problem, wedged_after_s=wedged)
        for stream, check in STATE_CHECKS.items():
            budget = budgets.prices_s if stream == subjects.PRICES_STREAM else budgets.state_s
            self.health.add(check, self._follower_check(stream, budget), wedged_after_s=wedged)
        self.health.add("partitions", self._partition_problem, wedged_after_s=wedged)

    def _lease_problem(self) -> str | None:
        budget_s = 3 * self.lease_ttl_ms / 1000
        silent_s = self.clock() - self._leases_renewed
        if silent_s <= budget_s:
            return None
        return f"no lease renewed for {silent_s:.0f} s (budget {budget_s:g} s): {self._lease_error or 'no answer'}"

    def _follower_check(self, stream: str, budget_s: float) -> Callable[[], str | None]:
        def check() -> str | None:
            follower = self.state.followers.get(stream)
            return follower.problem(budget_s) if follower is not None else f"{stream} is not followed"
        return check

    def _partition_problem(self) -> str | None:
        problems = [p for puller in list(self.pullers.values())
                    if (p := puller.problem(self.budgets.partitions_s)) is not None]
        return "; ".join(problems) or None

    # ------------------------------------------------------------------ partitions
    async def _keep_leases(self) -> None:
        while not self._stop.is_set():
            owned = await self._lease_round()
            for partition in set(self.owned) - owned:
                log.info("replica %s gives up partition %d", self.replica_id, partition)
                self.owned.pop(partition).cancel()
            for partition in owned:
                task = self.owned.get(partition)
                if task is None:
                    log.info("replica %s takes partition %d", self.replica_id, partition)
                elif task.done():  # its puller died of something unforeseen: pull again
                    why = "cancelled" if task.cancelled() else repr(task.exception())
                    log.error("partition %d stopped (%s); pulling again", partition, why)
                else:
                    continue
                self.owned[partition] = asyncio.create_task(self._pull(partition), name=f"partition-{partition}")
            self.metrics.partitions.set(len(self.owned))
            self.metrics.users.set(len(self.state.policies))
            await asyncio.sleep(self.lease_ttl_ms / 3000)

    def _settle_heap(self) -> None:
        """Out of the cyclic collector's sight: what the replica holds once a partition's state
        is read (its users' configs, specs, quotes; the modules). Python's full collection
        walks every tracked object, and the first one after 10,000 users' state was loaded
        stalled the event loop 230-502 ms (measured, docs/performance.md); frozen,
        the state is freed by reference counting as usual, only cycles among it would stay.
        Garbage already made is collected once, at the first take-over, before any signal."""
        if not self.settle_heap:
            return
        if not self._heap_settled:
            gc.collect()
            self._heap_settled = True
        gc.freeze()

    async def _lease_round(self) -> set[int]:
        """The partitions to own after one renewal; a failed renewal keeps them only until
        the leases lapse (another replica may take them then), and repairs the bucket."""
        try:
            if self._keeper is None:
                await self._create_missing(subjects.LEASES_BUCKET)
                self._keeper = LeaseKeeper(await self.js.key_value(subjects.LEASES_BUCKET), self.replica_id,
                                           partitions=self.partitions, ttl_ms=self.lease_ttl_ms)
            owned = await self._keeper.step(self.now_ms())
        except Exception as exc:  # NATS away, or the (memory) bucket gone with a server restart
            return await self._lease_failed(exc)
        if self._lease_error:
            log.info("lease renewal works again")
        self._leases_renewed, self._lease_error = self.clock(), ""
        return owned

    async def _lease_failed(self, exc: BaseException) -> set[int]:
        self.metrics.lease_failures.inc()
        text = describe(exc)
        (log.warning if not self._lease_error else log.debug)("lease renewal failed: %s", text)
        self._lease_error = text
        if self.nc.is_connected:
            try:
                await self._create_missing(subjects.LEASES_BUCKET)
            except Exception as repair:  # JetStream not ready yet: the next round tries again
                log.debug("re-creating the lease bucket failed: %s", describe(repair))
        lapsed = self.clock() - self._leases_renewed > self.lease_ttl_ms / 1000
        return set() if lapsed else set(self.owned)

    async def _pull(self, partition: int) -> None:
        # The partition's users known and their quotes read before its first signal: a
        # signal taken over from a dead replica is decided on the state it would have had.
        started = self.clock()
        if not await self.state.take(partition):
            log.warning("partition %d taken over before its state was read (%.1f s)", partition,
                        self.clock() - started)
        self.metrics.take_over.observe(self.clock() - started)
        self._settle_heap()
        try:
            await self._pull_signals(partition)
        finally:
            if self.owned.get(partition) is not asyncio.current_task():  # given up, not restarted
                await within(self.state.release(partition), timeout=5)

    async def _pull_signals(self, partition: int) -> None:
        puller = DurablePuller(self.nc, self.layout, subjects.adjust_consumer(partition), clock=self.clock,
                               on_error=self.metrics.fetch_errors.inc, on_recreated=self._recreated)
        self.pullers[partition] = puller
        try:
            while self._still_owns(partition):
                for message in await puller.fetch(FETCH_BATCH, timeout=1):
                    if await self._handle(partition, message):
                        puller.finished(message)
        finally:
            if self.pullers.get(partition) is puller:
                del self.pullers[partition]
            await puller.close()

    def _still_owns(self, partition: int) -> bool:
        # Checked as well as cancellation: a library may turn a cancel into an error we retry.
        return not self._stop.is_set() and self.owned.get(partition) is asyncio.current_task()

    # ------------------------------------------------------------------ one signal
    async def _handle(self, partition: int, message: Any) -> bool:
        """True once the signal is finished on this partition (acknowledged or refused)."""
        now = self.now_ms()
        try:
            signal = check_signal(decode(signals_pb2.UniversalSignal, message.data), now)
        except ValidationError as exc:
            self.metrics.invalid.labels("UniversalSignal").inc()
            self.metrics.signals.labels("invalid").inc()
            log.warning("refused a signal on %s: %s", message.subject, exc)
            await message.term()  # never redeliver what can never be valid
            return True
        self.metrics.signal_to_worker.observe(max(now - signal.created_at_ms, 0) / 1000)
        started = time.perf_counter()
        try:
            async with self._in_progress(message, partition):
                await self._fan_out(signal, partition, now)
        except Exception as exc:  # some publish failed: let the partition's consumer redeliver it
            log.warning("signal %s on partition %d not finished (%s); it will be redelivered",
                        signal.signal_id, partition, exc)
            self.metrics.signals.labels("retry").inc()
            await within(message.nak(delay=1), timeout=2)
            return False
        try:
            await message.ack()
        except Exception as exc:  # NATS away: redelivered after the ack wait, and deduplicated
            log.warning("acknowledging signal %s on partition %d failed: %s", signal.signal_id, partition, exc)
            return False
        self.metrics.adjust_time.observe(time.perf_counter() - started)
        self.metrics.signals.labels("done").inc()
        return True

    @contextlib.asynccontextmanager
    async def _in_progress(self, message: Any, partition: int) -> AsyncIterator[None]:
        """Tells JetStream the signal is being worked on every third of the ack wait, so a
        long fan-out is not redelivered to another replica while a short ack wait still
        brings back, within a signal's life, a delivery lost with a NATS node."""
        spec = next((c for c in self.layout.consumers if c.durable == subjects.adjust_consumer(partition)), None)
        interval_s = (spec.ack_wait_s if spec else subjects.ADJUST_ACK_WAIT_S) / 3

        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(interval_s)
                with contextlib.suppress(Exception):  # NATS away: the redelivery is deduplicated
                    await message.in_progress()

        task = asyncio.create_task(keep_alive(), name=f"in-progress-{partition}")
        try:
            yield
        finally:
            await cancel_and_wait([task])

    async def _fan_out(self, signal: Signal, partition: int, now: int) -> None:
        """Publish while adjusting, chunk by chunk: each chunk's records go out together, then
        the commands of the records stored, while the next chunk is being adjusted (the
        first chunk is small, so the first commands leave at once). Returns once every
        record and command is stored; raises the first failure (the caller naks: ids make
        the retry safe)."""
        if signal.action in POSITION_ACTIONS:
            await self._positions_current(signal)
        users = self.state.users(partition, self.partitions)
        publishing: list[asyncio.Task] = []
        try:
            start, size = 0, FIRST_CHUNK
            while start < len(users):
                # One chunk at a time in the whole replica: the partitions take turns, so the
                # event loop gets back every few ms and stored records' acks turn into
                # published commands while the rest is adjusted (eight partitions adjusting
                # side by side made each loop turn as long as eight chunks).
                async with self._deciding:
                    chunk = self.decisions_for_users(signal, users[start:start + size], now)
                publishing.append(asyncio.create_task(self._store_many(chunk)))
                start, size = start + size, FAN_OUT_CHUNK
                await asyncio.sleep(0)
            results = await asyncio.gather(*publishing, return_exceptions=True)
        finally:
            for task in publishing:
                task.cancel()  # only the unfinished ones: after a stop or a failure
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure

    async def _store_many(self, decisions: list[Decision]) -> None:
        """``_store`` for a chunk: its records in one batch, then the recorded commands in
        one batch; whatever failed in a batch goes again one by one, with retries."""
        if not decisions:
            return
        recorded = await self.decisions.record_many(decisions, self.batch.publish_many)
        commands: list[commands_pb2.TradingCommand] = []
        again: list[Decision] = []
        for decision, outcome in zip(decisions, recorded, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, (*TRANSIENT_PUBLISH_ERRORS, APIError)):
                    raise outcome
                again.append(decision)
            else:
                commands.extend(outcome)
        # The retries' coroutines are made here, where they are awaited: one made before a
        # failure raised would never run ("coroutine ... was never awaited").
        await asyncio.gather(self.publish_commands(commands), *(self._store(d) for d in again))

    async def publish_commands(self, commands: list[commands_pb2.TradingCommand]) -> None:
        """Recorded commands in one batch (``bench/delivery.py`` times this path); each that
        failed goes again alone, with retries."""
        if not commands:
            return
        items = [(subjects.user_subject(c.user_id, subjects.Channel.COMMANDS), c.SerializeToString(),
                  {"Nats-Msg-Id": c.command_id}) for c in commands]
        again: list[commands_pb2.TradingCommand] = []
        for command, ack in zip(commands, await self.batch.publish_many(items), strict=True):
            if isinstance(ack, BaseException):
                if not isinstance(ack, (*TRANSIENT_PUBLISH_ERRORS, APIError)):
                    raise ack
                again.append(command)
            elif not ack.duplicate:
                self.metrics.commands.inc()
        if again:
            await asyncio.gather(*(self._publish(c) for c in again))

    async def _positions_current(self, signal: Signal) -> None:
        """A close or modify is decided on the positions the stream holds now, not on what
        a follower recovering from a lost node has read so far: a fill stored a moment ago
        would otherwise make the user look flat (``no_position``) and their position stay
        open. Bounded: past the wait the signal is decided on what is known."""
        follower = self.state.followers.get(subjects.EXECUTIONS_STREAM)
        if follower is None:
            return
        try:
            if await follower.caught_up(POSITIONS_WAIT_S):
                return
        except Exception as exc:  # the stream's info unavailable: decide on what is known
            log.debug("positions follower not checked: %s", describe(exc))
        log.warning("signal %s decided on positions read up to sequence %d: the follower is behind",
                    signal.signal_id, follower.position)

    def decisions_for_users(self, signal: Signal, users: list[str], now: int) -> list[Decision]:
        """One decision per user; skips (and users whose odd state made the adjustment fail)
        are counted here, where they happen, not again on publishing."""
        # A user whose config was deleted since the fan-out began is no longer a user.
        decisions = [decide(signal, self.state.user_state(user_id), now) for user_id in users
                     if user_id in self.state.policies]
        for decision in decisions:
            if not decision.skipped:
                continue
            self.metrics.skips.labels(decision.skip_reason).inc()
            self.on_skip(signal.signal_id, decision.user_id, decision.skip_reason)
            if decision.skip_reason == ERROR:
                log.warning("adjusting %s for %s failed: %s", signal.signal_id, decision.user_id, decision.skip_detail)
        return decisions

    def commands_for(self, signal: Signal, partition: int, now: int) -> list[commands_pb2.TradingCommand]:
        """The commands one partition's decisions carry (benchmarks time the adjustment by it)."""
        return self.commands_for_users(signal, self.state.users(partition, self.partitions), now)

    def commands_for_users(self, signal: Signal, users: list[str], now: int) -> list[commands_pb2.TradingCommand]:
        return [wire.command_message(command) for decision in self.decisions_for_users(signal, users, now)
                for command in decision.commands]

    async def _store(self, decision: Decision) -> None:
        """The decision's record first, then the commands of the record that is stored."""
        commands = await self._retrying(lambda: self._in_slot(self.decisions.record(decision)))
        await asyncio.gather(*(self._publish(command) for command in commands))

    async def _publish(self, command: commands_pb2.TradingCommand) -> None:
        subject = subjects.user_subject(command.user_id, subjects.Channel.COMMANDS)
        ack = await self._retrying(lambda: self._in_slot(self.publisher.publish(
            subject, command.SerializeToString(), timeout=10, headers={"Nats-Msg-Id": command.command_id})))
        if not ack.duplicate:
            self.metrics.commands.inc()

    async def _in_slot(self, publish: Awaitable[T]) -> T:
        async with self._publish_slots:
            return await publish

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Retries a publish through a JetStream leader election or a reconnect (seconds)
        instead of putting the whole signal back: a lost nak would hold it for the ack
        wait, and it would then be too old. Safe: records and commands carry their ids."""
        for delay_s in RETRY_DELAYS_S:
            try:
                return await attempt()
            except TRANSIENT_PUBLISH_ERRORS as exc:
                if self._stop.is_set():
                    raise
                log.debug("publish failed (%s); retrying in %g s", describe(exc), delay_s)
                await asyncio.sleep(delay_s)
        return await attempt()  # the last try: its failure puts the signal back

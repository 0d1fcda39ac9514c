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
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from typing import Any

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.trading import Signal
from mt5fleet.proto.runtime.tasks import cancel_and_wait, within
from mt5fleet.proto.v1 import commands_pb2, signals_pb2
from mt5fleet.proto.validation import ValidationError, check_signal, decode
from mt5fleet.workers.adapters import wire
from mt5fleet.workers.adapters.decision_store import DecisionStore
from mt5fleet.workers.adapters.fleet_state import FleetState
from mt5fleet.workers.adapters.leases import LeaseKeeper
from mt5fleet.workers.adapters.metrics import AdjustMetrics
from mt5fleet.workers.core.decision import ERROR, Decision, decide

log = logging.getLogger("mt5fleet.worker.adjust")

FETCH_BATCH = 16
PUBLISH_CONCURRENCY = 256
# Users adjusted between two chances for their commands to be published.
FAN_OUT_CHUNK = 256


def wall_ms() -> int:
    return int(time.time() * 1000)


def _version() -> str:
    try:
        return metadata.version("mt5fleet")
    except metadata.PackageNotFoundError:  # a bare checkout
        return "0+unknown"


class AdjustWorker:
    def __init__(self, nc: Any, *, replica_id: str | None = None, partitions: int = subjects.ADJUST_PARTITIONS,
                 lease_ttl_ms: int = 10_000, now_ms: Callable[[], int] = wall_ms,
                 metrics: AdjustMetrics | None = None,
                 on_skip: Callable[[str, str, str], None] | None = None) -> None:
        self.nc, self.js = nc, nc.jetstream()
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.partitions = partitions
        self.lease_ttl_ms = lease_ttl_ms
        self.now_ms = now_ms
        self.metrics = metrics or AdjustMetrics()
        self.on_skip = on_skip or (lambda signal_id, user_id, reason: None)  # (signal, user, reason)
        self.state = FleetState(now_ms=now_ms, on_invalid=lambda kind, why: self.metrics.invalid.labels(kind).inc())
        self.decisions = DecisionStore(self.js, worker_version=_version(), worker_replica=self.replica_id,
                                       on_recorded=lambda outcome: self.metrics.decisions.labels(outcome).inc())
        self.owned: dict[int, asyncio.Task] = {}
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()
        self._keeper: LeaseKeeper | None = None
        self._publish_slots = asyncio.Semaphore(PUBLISH_CONCURRENCY)

    async def start(self) -> None:
        await self.state.follow(self.js)
        self._tasks.append(asyncio.create_task(self.state.watch_configs(), name="configs"))
        self._keeper = LeaseKeeper(await self.js.key_value(subjects.LEASES_BUCKET), self.replica_id,
                                   partitions=self.partitions, ttl_ms=self.lease_ttl_ms)
        self._tasks.append(asyncio.create_task(self._keep_leases(), name="leases"))

    async def stop(self, *, release: bool = True) -> None:
        """Stop pulling; with ``release`` hand the partitions over at once (SIGTERM)."""
        self._stop.set()
        await cancel_and_wait([*self.owned.values(), *self._tasks])
        self.owned.clear()
        if release and self._keeper is not None:
            await within(self._keeper.release_all(self.now_ms()), timeout=5)
        await self.state.close()

    # ------------------------------------------------------------------ partitions
    async def _keep_leases(self) -> None:
        while not self._stop.is_set():
            try:
                owned = await self._keeper.step(self.now_ms())
            except Exception as exc:  # NATS away: keep what we have until the leases lapse
                log.warning("lease renewal failed: %s", exc)
                owned = set(self.owned)
            for partition in set(self.owned) - owned:
                log.info("replica %s gives up partition %d", self.replica_id, partition)
                self.owned.pop(partition).cancel()
            for partition in owned - set(self.owned):
                log.info("replica %s takes partition %d", self.replica_id, partition)
                self.owned[partition] = asyncio.create_task(self._pull(partition), name=f"partition-{partition}")
            self.metrics.partitions.set(len(self.owned))
            self.metrics.users.set(len(self.state.policies))
            await asyncio.sleep(self.lease_ttl_ms / 3000)

    async def _pull(self, partition: int) -> None:
        subscription = await self.js.pull_subscribe_bind(durable=subjects.adjust_consumer(partition),
                                                         stream=subjects.SIGNALS_STREAM)
        failures = 0
        try:
            while self._still_owns(partition):
                try:
                    messages = await subscription.fetch(FETCH_BATCH, timeout=1)
                except TimeoutError:
                    continue
                except Exception as exc:  # NATS reconnecting: the consumer keeps our place
                    failures += 1
                    # Said once loudly (a missing consumer never heals by itself), then quietly.
                    (log.warning if failures == 1 else log.debug)("fetch on partition %d: %r", partition, exc)
                    self.metrics.fetch_errors.inc()
                    await asyncio.sleep(0.5)
                    continue
                failures = 0
                for message in messages:
                    await self._handle(partition, message)
        finally:
            await within(subscription.unsubscribe(), timeout=2)

    def _still_owns(self, partition: int) -> bool:
        # Checked as well as cancellation: a library may turn a cancel into an error we retry.
        return not self._stop.is_set() and self.owned.get(partition) is asyncio.current_task()

    # ------------------------------------------------------------------ one signal
    async def _handle(self, partition: int, message: Any) -> None:
        now = self.now_ms()
        try:
            signal = check_signal(decode(signals_pb2.UniversalSignal, message.data), now)
        except ValidationError as exc:
            self.metrics.invalid.labels("UniversalSignal").inc()
            self.metrics.signals.labels("invalid").inc()
            log.warning("refused a signal on %s: %s", message.subject, exc)
            await message.term()  # never redeliver what can never be valid
            return
        self.metrics.signal_to_worker.observe(max(now - signal.created_at_ms, 0) / 1000)
        started = time.perf_counter()
        try:
            await self._fan_out(signal, partition, now)
        except Exception as exc:  # some publish failed: let the partition's consumer redeliver it
            log.warning("signal %s on partition %d not finished (%s); it will be redelivered",
                        signal.signal_id, partition, exc)
            self.metrics.signals.labels("retry").inc()
            await message.nak(delay=1)
            return
        await message.ack()
        self.metrics.adjust_time.observe(time.perf_counter() - started)
        self.metrics.signals.labels("done").inc()

    async def _fan_out(self, signal: Signal, partition: int, now: int) -> None:
        """Publish while adjusting, chunk by chunk: the first users' commands leave while
        the rest of the partition is still being adjusted. Returns once every record and
        command is stored; raises the first failure (the caller naks: ids make the retry safe)."""
        users = self.state.users(partition, self.partitions)
        publishing: list[asyncio.Task] = []
        try:
            for start in range(0, len(users), FAN_OUT_CHUNK):
                chunk = self.decisions_for_users(signal, users[start:start + FAN_OUT_CHUNK], now)
                publishing.extend(asyncio.create_task(self._store(decision)) for decision in chunk)
                await asyncio.sleep(0)
            results = await asyncio.gather(*publishing, return_exceptions=True)
        finally:
            for task in publishing:
                task.cancel()  # only the unfinished ones: after a stop or a failure
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure

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
        async with self._publish_slots:
            commands = await self.decisions.record(decision)
        await asyncio.gather(*(self._publish(command) for command in commands))

    async def _publish(self, command: commands_pb2.TradingCommand) -> None:
        async with self._publish_slots:
            ack = await self.js.publish(subjects.user_subject(command.user_id, subjects.Channel.COMMANDS),
                                        command.SerializeToString(), timeout=10,
                                        headers={"Nats-Msg-Id": command.command_id})
        if not ack.duplicate:
            self.metrics.commands.inc()

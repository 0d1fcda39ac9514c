"""Decision records in JetStream (stream ``TC_DECISIONS``): written once per (signal, user)
by the adjustment worker, read by ``mt5fleet audit`` beside the execution reports.

Written once: the record's subject ``decisions.<uid>.<signal key>`` is its ``Nats-Msg-Id``
(a redelivery within the stream's duplicate window is acknowledged as a duplicate), and the
publish expects that subject to be empty (``Nats-Expected-Last-Subject-Sequence: 0``), so a
redelivery after the window is refused as well. Either way the worker learns the (signal,
user) is decided already and publishes the *recorded* commands: a command always matches
its record, even when the user's quote moved between the first delivery and the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from google.protobuf.message import DecodeError
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from mt5fleet.proto import subjects
from mt5fleet.proto.v1 import commands_pb2, decision_pb2, execution_pb2
from mt5fleet.workers.adapters.decisions import record_message
from mt5fleet.workers.core.decision import Decision

# JetStream's "wrong last sequence": the subject holds a record already.
WRONG_LAST_SEQUENCE = 10071
FETCH_BATCH = 256
READ_TIMEOUT_S = 5.0
STORED, EXISTING = "stored", "existing"  # a new record; a (signal, user) decided before
CLOCK_MARGIN_MS = 5_000
SCAN_SLOTS = 16


class DecisionStore:
    """The worker's side: store a decision once, learn which commands to publish.
    ``on_recorded`` hears each outcome (``STORED`` or ``EXISTING``: the metric)."""

    def __init__(self, js: Any, *, worker_version: str = "", worker_replica: str = "",
                 on_recorded: Callable[[str], None] = lambda _outcome: None,
                 publish: Callable[..., Awaitable[Any]] | None = None) -> None:
        self.js = js
        self.publish = publish or js.publish    # the worker's: re-creates TC_DECISIONS if it is gone
        self.worker_version, self.worker_replica = worker_version, worker_replica
        self.on_recorded = on_recorded
        # Scans of TC_COMMANDS in flight (each a consumer while it reads): far below the
        # server's 1,000 consumers a stream, however many chunks come back at once.
        self._scans = asyncio.Semaphore(SCAN_SLOTS)

    async def record(self, decision: Decision) -> list[commands_pb2.TradingCommand]:
        """Store ``decision`` unless its (signal, user) has a record; the commands of the
        record that is stored (this one's, or the earlier one's) are what to publish."""
        subject = subjects.decision_subject(decision.user_id, decision.signal_id)
        record = record_message(decision, worker_version=self.worker_version, worker_replica=self.worker_replica)
        headers = {"Nats-Msg-Id": subject, "Nats-Expected-Last-Subject-Sequence": "0"}
        try:
            ack = await self.publish(subject, record.SerializeToString(), timeout=10, headers=headers)
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            return (await self._earlier([subject]))[0]
        if ack.duplicate:
            return (await self._earlier([subject]))[0]
        self.on_recorded(STORED)
        return list(record.commands)

    async def record_many(self, decisions: list[Decision],
                          publish_many: Callable[[list[tuple[str, bytes, dict[str, str]]]], Awaitable[list[Any]]],
                          ) -> list[list[commands_pb2.TradingCommand] | BaseException]:
        """``record`` for many decisions with their records published together
        (``streams.BatchPublisher``): per decision, the commands to publish, or the error
        of its publish (the caller retries that one through ``record``)."""
        items, records = [], []
        for decision in decisions:
            subject = subjects.decision_subject(decision.user_id, decision.signal_id)
            record = record_message(decision, worker_version=self.worker_version, worker_replica=self.worker_replica)
            records.append((subject, record))
            items.append((subject, record.SerializeToString(),
                          {"Nats-Msg-Id": subject, "Nats-Expected-Last-Subject-Sequence": "0"}))
        out: list[Any] = []
        earlier: dict[int, str] = {}
        for (subject, record), result in zip(records, await publish_many(items), strict=True):
            wrong_last = isinstance(result, APIError) and result.err_code == WRONG_LAST_SEQUENCE
            if isinstance(result, BaseException) and not wrong_last:
                out.append(result)
            elif wrong_last or result.duplicate:
                earlier[len(out)] = subject  # decided before: looked up together below
                out.append(None)
            else:
                self.on_recorded(STORED)
                out.append(list(record.commands))
        if earlier:
            try:
                found: list[Any] = await self._earlier(list(earlier.values()))
            except Exception as exc:  # noqa: BLE001 - each of them is retried alone by the caller
                found = [exc] * len(earlier)
            for index, commands in zip(earlier, found, strict=True):
                out[index] = commands
        return out

    async def _earlier(self, subjects_: list[str]) -> list[list[commands_pb2.TradingCommand]]:
        """Per record subject, the earlier record's commands that are not in ``TC_COMMANDS``
        yet. Those stored already are not published again: JetStream would drop the copy
        from the stream, but the server still hands it to the agent's live subscription,
        and the agent would see a command again minutes later (and report it DUPLICATE).

        The records are read by direct gets, and ``TC_COMMANDS`` by one short-lived
        consumer for all their users: a redelivered signal brings back a whole partition
        at once, and a consumer per user ran into the server's limit of consumers on a
        stream (1,000: "maximum consumers limit reached", 10,000 users in
        bench/end_to_end.py), so the redelivery failed again every time."""
        for _ in subjects_:
            self.on_recorded(EXISTING)
        messages = await asyncio.gather(*(self.js.get_msg(subjects.DECISIONS_STREAM, subject=subject, direct=True)
                                          for subject in subjects_))
        records = [decision_pb2.DecisionRecord.FromString(message.data) for message in messages]
        with_commands = [(record, message) for record, message in zip(records, messages, strict=True)
                         if record.commands]
        stored: set[str] = set()
        if with_commands:
            # Commands are stored after their record; the margin covers two stream leaders' clocks.
            since_ms = max(0, min(_unix_ms(message.time) for _, message in with_commands) - CLOCK_MARGIN_MS)
            async with self._scans:
                stored = await stored_commands(
                    self.js, {record.user_id for record, _ in with_commands},
                    [c.command_id for record, _ in with_commands for c in record.commands], since_ms)
        return [[command for command in record.commands if command.command_id not in stored] for record in records]


async def stored_commands(js: Any, user_ids: Iterable[str], command_ids: Iterable[str], since_ms: int) -> set[str]:
    """Which of ``command_ids`` ``TC_COMMANDS`` holds for these users, stored since ``since_ms``."""
    wanted, found = set(command_ids), set()
    filters = tuple(sorted(subjects.user_subject(uid, subjects.Channel.COMMANDS) for uid in user_ids))
    async for message in scan(js, subjects.COMMANDS_STREAM, filters, since_ms=since_ms):
        try:
            command_id = commands_pb2.TradingCommand.FromString(message.data).command_id
        except DecodeError:
            continue
        if command_id in wanted:
            found.add(command_id)
    return found


# ----------------------------------------------------------------------------- reading
# Readers get each record with the time JetStream stored it (unix ms, the server's clock):
# a command's reports are stored after its record, so that time bounds their search.

Stored = tuple[decision_pb2.DecisionRecord, int]


async def find_decision(js: Any, signal_id: str, user_id: str) -> Stored | None:
    """The one record of (signal, user), by a direct get; None when there is none."""
    try:
        message = await js.get_msg(subjects.DECISIONS_STREAM, subject=subjects.decision_subject(user_id, signal_id),
                                   direct=True)
    except NotFoundError:
        return None
    return decision_pb2.DecisionRecord.FromString(message.data), _unix_ms(message.time)


async def decisions(js: Any, filter_subject: str) -> AsyncIterator[Stored]:
    """Every record on ``filter_subject`` (``subjects.decisions_of_signal`` / ``_of_user``,
    or ``decisions.>`` for all), oldest first."""
    async for message in scan(js, subjects.DECISIONS_STREAM, filter_subject):
        yield decision_pb2.DecisionRecord.FromString(message.data), _unix_ms(message.metadata.timestamp)


def _unix_ms(moment: dt.datetime | None) -> int:
    return int(moment.timestamp() * 1000) if moment is not None else 0


async def executions_for(js: Any, user_id: str, command_ids: Iterable[str],
                         since_ms: int = 0) -> list[execution_pb2.ExecutionReport]:
    """The user's execution reports of ``command_ids`` stored since ``since_ms`` (a report
    never precedes its command), in the order the agent sent them."""
    wanted, found = set(command_ids), []
    if not wanted:
        return found
    subject = subjects.user_subject(user_id, subjects.Channel.EXECUTIONS)
    async for message in scan(js, subjects.EXECUTIONS_STREAM, subject, since_ms=since_ms):
        try:
            report = execution_pb2.ExecutionReport.FromString(message.data)
        except DecodeError:  # a tenant's unreadable report costs only itself
            continue
        if report.command_id in wanted:
            found.append(report)
    return found


async def scan(js: Any, stream: str, filter_subject: str | tuple[str, ...], *,
               since_ms: int = 0) -> AsyncIterator[Any]:
    """The messages on ``filter_subject`` (one, or several: nats-server 2.10+) stored since
    ``since_ms`` (0: all), by a short-lived pull consumer: it says at creation how many
    there are, so an empty scan never waits."""
    start = dt.datetime.fromtimestamp(since_ms / 1000, tz=dt.UTC) if since_ms else None
    several = not isinstance(filter_subject, str) and len(filter_subject) > 1
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE, inactive_threshold=60, opt_start_time=start,
        deliver_policy=api.DeliverPolicy.BY_START_TIME if start else api.DeliverPolicy.ALL,
        filter_subjects=list(filter_subject) if several else None)
    first = filter_subject if isinstance(filter_subject, str) else filter_subject[0]
    subscription = await js.pull_subscribe(first, stream=stream, config=config)
    info = await subscription.consumer_info()
    try:
        pending = info.num_pending
        while pending > 0:
            batch = await subscription.fetch(min(pending, FETCH_BATCH), timeout=READ_TIMEOUT_S)
            pending -= len(batch)
            for message in batch:
                yield message
    finally:
        await subscription.unsubscribe()
        with contextlib.suppress(APIError):  # gone already: it would lapse by itself anyway
            await js.delete_consumer(stream, info.name)

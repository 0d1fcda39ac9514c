"""Following a whole JetStream stream in order, and coming back by itself.

A ``Follower`` hands every message of one stream to a handler, in stream order, from a
typed start position, through an ephemeral push consumer it owns (flow control, idle
heartbeats, no acks) and re-creates whenever it stops working:

* the consumer is silent for ``missed_heartbeats`` idle heartbeats (deleted behind our
  back, the server restarted, the stream deleted with it);
* a consumer sequence is skipped (a message dropped as a slow consumer);
* the stream itself was recreated: its ``created`` time changed or it holds fewer messages
  than we have seen (a memory stream after a server restart comes back empty at sequence 1);
* the connection came back after a reconnect (looked at at once, not at the next check);
* the stream is missing: ``ensure`` (the layout's create-if-missing) makes it again.

It resumes after the last stream sequence it handed over, or, when the stream was
recreated, from ``start()`` again (the start position is a function, so a time window is
computed when it is needed). nats-py's own ordered consumer is not used: its reset keeps
``opt_start_time`` beside ``by_start_sequence``, which the server refuses, and resumes a
recreated stream at the old sequence (docs/upstream/nats-py-ordered-consumer-reset.md).

Handlers are synchronous: one message is handled completely before the next, so the
stream order is the order of effects. A handler's exception is logged and counted; it
never stops the stream. ``problem(budget_s)`` says in one line why the follower has not
been doing its job for longer than a budget (for ``/readyz``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.js import api
from nats.js.errors import NotFoundError

from mt5fleet.proto.runtime.errors import describe
from mt5fleet.proto.runtime.tasks import cancel_and_wait, within

log = logging.getLogger("mt5fleet.follow")


# ----------------------------------------------------------------------- start positions
@dataclass(frozen=True)
class FromFirst:
    """Every message the stream holds."""


@dataclass(frozen=True)
class LastPerSubject:
    """The last message of each subject, then everything new."""


@dataclass(frozen=True)
class FromTime:
    """Messages the server stored at or after ``time_ms`` (unix ms, the server's clock)."""

    time_ms: int


@dataclass(frozen=True)
class FromSequence:
    """Messages from stream sequence ``sequence`` on."""

    sequence: int


StartPosition = FromFirst | LastPerSubject | FromTime | FromSequence


def deliver_fields(position: StartPosition) -> dict[str, Any]:
    """The consumer config fields of a start position: exactly one policy and its one
    option, never a start time beside a start sequence (the server refuses that)."""
    if isinstance(position, FromSequence):
        return {"deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": max(position.sequence, 1)}
    if isinstance(position, FromTime):
        return {"deliver_policy": api.DeliverPolicy.BY_START_TIME,
                "opt_start_time": dt.datetime.fromtimestamp(position.time_ms / 1000, tz=dt.UTC)}
    if isinstance(position, LastPerSubject):
        return {"deliver_policy": api.DeliverPolicy.LAST_PER_SUBJECT}
    return {"deliver_policy": api.DeliverPolicy.ALL}


def wall_ms() -> int:
    """The server stamps stored messages with wall time: time windows are computed in it,
    never in a simulated market clock."""
    return int(time.time() * 1000)


# ----------------------------------------------------------------------- the follower
@dataclass(frozen=True)
class FollowOptions:
    idle_heartbeat_s: float = 2.0
    missed_heartbeats: int = 2         # silence this long, in heartbeats: the consumer is gone
    check_interval_s: float = 5.0      # how often the stream itself is looked at
    stuck_after_s: float = 15.0        # behind the stream this long without progress: start over
    inactive_threshold_s: float = 30.0  # the server removes a consumer we abandoned after this
    retry_max_s: float = 5.0           # cap of the backoff between failed recoveries
    yield_every: int = 64              # messages handled in a row before other tasks get a turn


Handler = Callable[[Any], None]
Ensure = Callable[[], Awaitable[object]]


class _Disconnected(RuntimeError):
    """Nothing to do until the connection is back."""


class Follower:
    def __init__(self, nc: Any, stream: str, handler: Handler, *,
                 start: Callable[[], StartPosition] = LastPerSubject, ensure: Ensure | None = None,
                 options: FollowOptions | None = None, clock: Callable[[], float] = time.monotonic,
                 filter_subjects: tuple[str, ...] = (), label: str = "") -> None:
        self.nc, self.js = nc, nc.jetstream()
        self.label = label    # what part of the stream it reads, in its task name and consumer description
        # Only the stored subjects matching these (one partition's prices); () = the whole stream.
        self.filter_subjects = tuple(filter_subjects)
        self.stream, self.handler, self.start_position, self.ensure = stream, handler, start, ensure
        self.options = options or FollowOptions()
        self.clock = clock
        self.last_sequence = 0        # stream sequence of the last message handed to the handler
        self.position = 0             # how far the consumer has read (heartbeats say so when idle)
        self.handler_errors = 0
        self.last_error = ""
        self.consumer: str | None = None
        self._generation = 0
        self._consumers = 0           # consumers created so far
        self._delivered = 0           # consumer sequence of the current consumer's last message
        self._subscription: Any = None
        self._created: dt.datetime | None = None
        self._stream_last = 0
        self._last_signal = clock()
        self._failing_since: float | None = None
        self._behind_since: float | None = None
        self._reset_reason = ""
        self._next_check = 0.0
        self._reconnects = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._unyielded = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> Follower:
        """First consumer now (a failure is retried in the background), then keep watching."""
        self._reconnects = self.nc.stats.get("reconnects", 0)
        try:
            await self._look(force="start")
        except Exception as exc:  # NATS or JetStream away: the watcher keeps trying
            self._failed(exc)
        self._task = asyncio.create_task(self._watch(), name=f"follow-{self.stream}{self._label()}")
        return self

    def _label(self) -> str:
        if self.label:
            return f" ({self.label})"
        if len(self.filter_subjects) == 1:
            return f" ({self.filter_subjects[0]})"
        return f" ({len(self.filter_subjects)} subjects)" if self.filter_subjects else ""

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task], timeout=2)
        await self._drop_consumer()

    # ------------------------------------------------------------------ health
    def problem(self, budget_s: float) -> str | None:
        """Why this follower has not been doing its job for longer than ``budget_s``; None if it has."""
        now = self.clock()
        if self._failing_since is not None and now - self._failing_since > budget_s:
            return f"{self.stream}: not following for {now - self._failing_since:.0f} s ({self.last_error})"
        if self._behind_since is not None and now - self._behind_since > budget_s:
            return (f"{self.stream}: behind the stream for {now - self._behind_since:.0f} s (read up to sequence "
                    f"{self.position}, stored up to {self._stream_last})")
        return None

    async def caught_up(self, timeout_s: float, poll_s: float = 0.01, nudge_after_s: float = 0.5) -> bool:
        """Waits until everything the stream held when asked has been handled: read-your-
        writes for a decision that depends on it (a close signal right after its open's
        fill). A follower making no progress for ``nudge_after_s`` checks its consumer at
        once instead of waiting for its heartbeats to go missing (a consumer lost with a
        node, or deleted). False if ``timeout_s`` passed first."""
        started = self.clock()
        target = (await self.js.stream_info(self.stream)).state.last_seq
        progress, progressed_at = self.position, started
        while self.position < target:
            now = self.clock()
            if now - started >= timeout_s:
                return False
            if self.position != progress:
                progress, progressed_at = self.position, now
            elif now - progressed_at >= nudge_after_s:
                await self._nudge()
                progressed_at = now
            await asyncio.sleep(poll_s)
        return True

    async def drained(self, timeout_s: float, poll_s: float = 0.2) -> bool:
        """Waits until the consumer has nothing pending and everything it delivered has been
        handled: what its filter holds now is known (a partition's quotes after taking it
        over). Unlike ``caught_up`` it does not wait for stream sequences the filter does not
        match. It asks the server every ``poll_s``: a consumer info of a consumer filtering on
        thousands of subjects is not free for the server (tens of ms under load). False if
        ``timeout_s`` passed first."""
        started = self.clock()
        while self.clock() - started < timeout_s:
            consumer = self.consumer
            if consumer is not None and self._failing_since is None:
                try:
                    info = await self.js.consumer_info(self.stream, consumer)
                except Exception:  # being re-created: look again
                    info = None
                if info is not None and consumer == self.consumer and not info.num_pending:
                    delivered = info.delivered.consumer_seq if info.delivered is not None else 0
                    while self._delivered < delivered and consumer == self.consumer:
                        if self.clock() - started >= timeout_s:
                            return False
                        await asyncio.sleep(0.01)  # local: what was delivered being handled
                    if consumer == self.consumer:
                        return True
            await asyncio.sleep(poll_s)
        return False

    async def _nudge(self) -> None:
        if not self.following:
            self._wake.set()
            return
        try:
            reason = await self._consumer_gone()
        except Exception as exc:  # its node gone: the consumer cannot deliver either
            reason = f"consumer not answering ({exc.__class__.__name__})"
        if reason:
            self._request_reset(reason)

    @property
    def resets(self) -> int:
        """Consumers created after the first: how often this follower had to start over."""
        return max(self._consumers - 1, 0)

    @property
    def following(self) -> bool:
        return self._subscription is not None and self._failing_since is None

    # ------------------------------------------------------------------ watching
    async def _watch(self) -> None:
        delay = 0.0
        while True:
            tick = self.options.idle_heartbeat_s / 2
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(tick, delay))
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._look()
                delay = 0.0
            except _Disconnected as exc:  # no I/O tried: look again at the next tick, not later
                self._failed(exc)
                delay = 0.0
            except Exception as exc:  # retried with backoff; problem() reports it after its budget
                self._failed(exc)
                delay = min(max(delay * 2, tick), self.options.retry_max_s)

    async def _look(self, force: str = "") -> None:
        """One round: decide whether the stream or the consumer needs attention, and act."""
        if not self.nc.is_connected:
            raise _Disconnected("NATS connection lost")
        reconnects = self.nc.stats.get("reconnects", 0)
        reason = force or self._reset_reason or self._silence()
        # After a reconnect the stream is looked at at once: a memory stream may be gone.
        due = (reason or self._subscription is None or reconnects != self._reconnects
               or self.clock() >= self._next_check)
        if not due:
            return
        reconnected = reconnects != self._reconnects
        # What was handled before asking: messages keep arriving while the answer is on its
        # way, and a stream is not "shorter than what was read" because of those.
        handled_before = self.last_sequence
        info = await self._stream_info()
        recreated = self._recreated(info, handled_before)
        reason = reason or ("stream recreated" if recreated else "") or self._stuck()
        if reconnected and not reason:
            reason = await self._consumer_gone()
        if reason or self._subscription is None:
            await self._restart(reason or "no consumer", recreated, info)
        self._note_stream(info)
        self._next_check = self.clock() + self.options.check_interval_s
        self._reconnects = reconnects   # only now: a round that failed looks again next time
        self._recovered()

    def _silence(self) -> str:
        limit = self.options.idle_heartbeat_s * (self.options.missed_heartbeats + 0.5)
        if self._subscription is not None and self.clock() - self._last_signal > limit:
            return f"no message or heartbeat for {self.clock() - self._last_signal:.1f} s"
        return ""

    def _stuck(self) -> str:
        if self._behind_since is not None and self.clock() - self._behind_since > self.options.stuck_after_s:
            return f"no progress towards sequence {self._stream_last}"
        return ""

    async def _stream_info(self) -> Any:
        try:
            return await self.js.stream_info(self.stream)
        except NotFoundError:
            if self.ensure is None:
                raise
        log.warning("stream %s is missing: re-creating it from the layout", self.stream)
        await self.ensure()
        return await self.js.stream_info(self.stream)

    async def _consumer_gone(self) -> str:
        """A server restart loses our in-memory consumer: no need to wait for its silence."""
        if self.consumer is None:
            return ""
        try:
            await self.js.consumer_info(self.stream, self.consumer)
        except NotFoundError:
            return "consumer gone after a reconnect"
        return ""

    def _recreated(self, info: Any, handled_before: int) -> bool:
        if self._created is None:
            return False
        return info.created != self._created or info.state.last_seq < handled_before

    def _note_stream(self, info: Any) -> None:
        self._created = info.created
        self._stream_last = info.state.last_seq
        if self._stream_last <= self.position:
            self._behind_since = None
        elif self._behind_since is None:
            self._behind_since = self.clock()

    # ------------------------------------------------------------------ (re)creating the consumer
    async def _restart(self, reason: str, recreated: bool, info: Any) -> None:
        if recreated:
            self.last_sequence = self.position = 0
        resume = (FromSequence(self.last_sequence + 1) if self.last_sequence else self.start_position())
        if self._consumers:
            log.warning("following %s again from %s: %s", self.stream, resume, reason)
        await self._drop_consumer()
        self._generation += 1
        generation, inbox = self._generation, self.nc.new_inbox()
        self._delivered, self._reset_reason, self._last_signal = 0, "", self.clock()
        self._behind_since = None
        # Subscribed before the consumer exists, so its first message cannot be missed; the
        # first messages may well be handled before the consumer's creation is confirmed.
        self._subscription = await self.nc.subscribe(inbox, cb=self._callback(generation))
        try:
            consumer = await self.js.add_consumer(self.stream, config=self._config(inbox, resume, info))
        except BaseException:
            await self._drop_consumer()
            raise
        self.consumer = consumer.name
        self._consumers += 1
        if consumer.delivered is not None:  # where a start position lands (a time window with nothing newer)
            self._advance(consumer.delivered.stream_seq)
        self._created = info.created

    def _config(self, inbox: str, position: StartPosition, info: Any) -> api.ConsumerConfig:
        options = self.options
        # "Last per subject" needs a filter: the stream's own subjects, i.e. all of it.
        stream_subjects = list(self.filter_subjects or info.config.subjects or [])
        filters: dict[str, Any] = ({"filter_subject": stream_subjects[0]} if len(stream_subjects) == 1
                                   else {"filter_subjects": stream_subjects})
        return api.ConsumerConfig(
            deliver_subject=inbox, ack_policy=api.AckPolicy.NONE, flow_control=True,
            idle_heartbeat=options.idle_heartbeat_s, inactive_threshold=options.inactive_threshold_s,
            mem_storage=True, num_replicas=1, description=f"mt5fleet follower of {self.stream}{self._label()}",
            **filters, **deliver_fields(position))

    async def _drop_consumer(self) -> None:
        subscription, consumer = self._subscription, self.consumer
        self._subscription = self.consumer = None
        self._generation += 1  # whatever the old subscription still delivers is ignored
        if subscription is not None:
            await within(subscription.unsubscribe(), 2)
        if consumer is not None and self.nc.is_connected:
            # Best effort: an abandoned consumer lapses after inactive_threshold anyway.
            await within(self.js.delete_consumer(self.stream, consumer), 2)

    def _failed(self, exc: BaseException) -> None:
        text = describe(exc)
        if self._failing_since is None:
            self._failing_since = self.clock()
            log.warning("following %s failed: %s; retrying", self.stream, text)
        elif text != self.last_error:
            log.info("following %s still failing: %s", self.stream, text)
        self.last_error = text

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("following %s again after %.1f s", self.stream, self.clock() - self._failing_since)
        self._failing_since = None

    def _request_reset(self, reason: str) -> None:
        self._reset_reason = self._reset_reason or reason
        self._wake.set()

    # ------------------------------------------------------------------ delivery
    def _callback(self, generation: int) -> Callable[[Any], Awaitable[None]]:
        async def on_message(msg: Any) -> None:
            if generation != self._generation or self._reset_reason:
                return  # an old consumer's leftovers, or a gap already seen: the reset resends
            headers = msg.headers or {}
            if headers.get(api.Header.STATUS) is not None:
                await self._on_status(msg, headers)
                return
            self._on_data(msg)
            self._unyielded += 1
            if self._unyielded >= self.options.yield_every:
                # nats-py hands a subscription its queued messages without ever giving the
                # loop away: lease renewals, probes and this watcher must get their turn.
                self._unyielded = 0
                await asyncio.sleep(0)
        return on_message

    async def _on_status(self, msg: Any, headers: dict[str, str]) -> None:
        self._last_signal = self.clock()
        for reply in (msg.reply, headers.get(api.Header.CONSUMER_STALLED)):
            if reply:  # flow control: everything before it has been handled
                await self.nc.publish(reply, b"")
        last_consumer = headers.get(api.Header.LAST_CONSUMER)
        if last_consumer is not None and int(last_consumer) != self._delivered:
            self._request_reset(f"heartbeat says {last_consumer} delivered, {self._delivered} received")
            return
        last_stream = headers.get(api.Header.LAST_STREAM)
        if last_stream is not None:
            self._advance(int(last_stream))

    def _on_data(self, msg: Any) -> None:
        stream_seq, consumer_seq = sequences(msg.reply)
        if consumer_seq != self._delivered + 1:
            self._request_reset(f"consumer sequence {consumer_seq} after {self._delivered}")
            return
        self._delivered, self._last_signal = consumer_seq, self.clock()
        self.last_sequence = stream_seq
        self._advance(stream_seq)
        try:
            self.handler(msg)
        except Exception:  # one bad message never stops the stream
            self.handler_errors += 1
            log.exception("handling %s sequence %d failed", self.stream, stream_seq)

    def _advance(self, position: int) -> None:
        self.position = max(self.position, position)
        if self.position >= self._stream_last:
            self._behind_since = None


def sequences(reply: str) -> tuple[int, int]:
    """(stream sequence, consumer sequence) from a JetStream message's reply subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>``, or the
    form with a domain and account hash after ``$JS.ACK``."""
    tokens = reply.split(".")
    offset = 0 if len(tokens) == 9 else 2
    return int(tokens[5 + offset]), int(tokens[6 + offset])

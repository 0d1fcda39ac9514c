"""The catch-up service: after a reconnect an agent asks here for the commands it missed.

An agent requests ``tc.<uid>.catchup`` (CatchupRequest); one replica of the queue group
answers with a page (CatchupBatch) of that user's stored ``tc.<uid>.commands`` and the
cursor for the next page; the agent pages until ``done``. The user is taken from the
subject only, never from the payload: a tenant's account imports only its own literal
``tc.<uid>.catchup`` (SPEC §7), so the subject says which tenant asked. Reads are direct
gets (``CommandStore``): no consumer per agent (SPEC §2.2, §7).

A reply goes only where it returns to the requester: through the service import the
server rewrites a tenant's reply subject to a response subject ``_R_.…`` in the platform
account, which leads back into that tenant's account only, whatever the tenant named. A
platform process asking directly (tests, tools) is answered on ``_INBOX_<uid>.``. Any other
reply subject is refused: NATS does not check reply subjects against permissions.

Under a fleet reconnecting together a replica answers what it can while the asker still
waits: a request that waited longer than ``SHED_AFTER_S`` for one of its page slots is
dropped (counted ``shed``); the agent asks again after its jittered back-off.

``/readyz`` fails while requests keep failing: once the first failure since the last
served page is older than ``failing_budget_s`` (stored commands unreadable, JetStream
away). A served page turns it green again; agents retry their catch-up until one is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.catchup import CatchupPage, CatchupQuery
from mt5fleet.proto.runtime.errors import describe
from mt5fleet.proto.runtime.probes import Health
from mt5fleet.proto.runtime.tasks import cancel_and_wait
from mt5fleet.proto.v1.catchup_pb2 import CatchupRequest
from mt5fleet.proto.validation import ValidationError, check_catchup_request, decode
from mt5fleet.proto.validation_catchup import REQUEST_LIMITS, catchup_batch_message
from mt5fleet.workers.adapters.command_store import CommandStore
from mt5fleet.workers.adapters.metrics import CatchupMetrics
from mt5fleet.workers.core.catchup import DEFAULT_PAGE_COMMANDS, PAGE_BYTES, PageBuilder, page_commands

log = logging.getLogger("mt5fleet.worker.catchup")

# Pages read at once per replica: enough for a fleet reconnecting together, few enough that
# the replica's direct gets do not crowd out JetStream's other clients.
MAX_CONCURRENT_PAGES = 32
# nats-server's prefix for the reply subjects it makes for requests through a service import.
RESPONSE_IMPORT_PREFIX = "_R_."
# A request that waited this long for a free slot is dropped unanswered: its agent has given up
# on it (the agent's page timeout is 3 s) and asks again after its back-off. Serving it anyway
# is how a fleet reconnecting together keeps a replica busy with answers nobody reads, while
# every fresh request times out behind them (the 1,000-agent soak: 999 agents failing their
# catch-up for 13 minutes after a nats-server restart, 50 commands never executed).
SHED_AFTER_S = 2.0
# Requests failing this long (no page served since): not ready; this long while connected: restart.
FAILING_BUDGET_S = 30.0
WEDGED_AFTER_S = 300.0


class Refused(Exception):
    """A request answered with nothing at all; ``label`` is the metric's reason."""

    def __init__(self, label: str, reason: str) -> None:
        super().__init__(reason)
        self.label = label


class CatchupService:
    def __init__(self, nc: Any, *, metrics: CatchupMetrics | None = None, store: CommandStore | None = None,
                 default_page: int = DEFAULT_PAGE_COMMANDS, page_bytes: int = PAGE_BYTES,
                 failing_budget_s: float = FAILING_BUDGET_S, clock: Callable[[], float] = time.monotonic,
                 concurrent_pages: int = MAX_CONCURRENT_PAGES, shed_after_s: float = SHED_AFTER_S) -> None:
        self.nc = nc
        self.store = store or CommandStore(nc.jetstream())
        self.metrics = metrics or CatchupMetrics()
        self.default_page = default_page
        self.page_bytes = page_bytes
        self._slots = asyncio.Semaphore(concurrent_pages)
        self.shed_after_s = shed_after_s
        self._tasks: set[asyncio.Task] = set()
        self._subscription: Any = None
        self.failing_budget_s, self.clock = failing_budget_s, clock
        self._failing_since: float | None = None
        self._last_failure = ""
        self.health = Health(registry=self.metrics.registry, connected=lambda: nc.is_connected)
        self.health.add("requests", self.requests_problem, wedged_after_s=WEDGED_AFTER_S)

    def requests_problem(self) -> str | None:
        if self._failing_since is None or self.clock() - self._failing_since <= self.failing_budget_s:
            return None
        return (f"catch-up requests failing for {self.clock() - self._failing_since:.0f} s, none served since "
                f"({self._last_failure})")

    async def start(self) -> None:
        self._subscription = await self.nc.subscribe(subjects.user_wildcard(subjects.Channel.CATCHUP),
                                                     queue=subjects.CATCHUP_QUEUE, cb=self._on_request)
        await self.nc.flush()  # subscribed at the server once started: no "no responders" just after

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):  # the connection may be closing already
                await self._subscription.unsubscribe()
            self._subscription = None
        await cancel_and_wait(self._tasks)

    async def run(self) -> None:
        """For the worker runner: start, then serve until cancelled."""
        await self.start()
        await asyncio.Event().wait()

    async def _on_request(self, message: Any) -> None:
        # The callback only admits, without waiting: a callback that waited for a slot would
        # leave the rest queued inside the client, where their age cannot be seen. Each
        # request waits for a slot in its own task, and is dropped if that took too long.
        task = asyncio.create_task(self._admit(message, self.clock()), name="catchup-page")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit(self, message: Any, arrived: float) -> None:
        async with self._slots:
            if self.clock() - arrived > self.shed_after_s:
                self.metrics.requests.labels("shed").inc()
                return
            await self._answer(message)

    async def _answer(self, message: Any) -> None:
        with self.metrics.page_time.time():
            try:
                user_id = requester(message.subject, message.reply)
            except Refused as exc:
                self._count_refusal(exc.label, f"{exc} (subject {message.subject!r}, reply {message.reply!r})")
                return
            try:
                query = check_catchup_request(decode(CatchupRequest, message.data, REQUEST_LIMITS))
            except ValidationError as exc:
                self._count_refusal("invalid", f"from {user_id}: {exc}")
                await self._reply(message, CatchupPage.refused(str(exc)))
                return
            await self._serve(message, user_id, query)

    async def _serve(self, message: Any, user_id: str, query: CatchupQuery) -> None:
        try:
            page = await self.read_page(user_id, query)
        except Exception as exc:  # JetStream briefly unavailable: the agent asks again
            self.metrics.requests.labels("failed").inc()
            log.warning("catch-up of %s failed: %r", user_id, exc)
            if self._failing_since is None:
                self._failing_since = self.clock()
            self._last_failure = describe(exc)
            await self._reply(message, CatchupPage.refused(f"stored commands unreadable: {exc!r}"))
            return
        await self._reply(message, page)
        self._failing_since = None
        self.metrics.requests.labels("served").inc()
        self.metrics.commands.inc(len(page.commands))

    async def read_page(self, user_id: str, query: CatchupQuery) -> CatchupPage:
        """One page of the user's commands from the query's cursor; one read past the page
        says whether it is the last."""
        subject = subjects.user_subject(user_id, subjects.Channel.COMMANDS)
        builder = PageBuilder(page_commands(query.max_commands, self.default_page), self.page_bytes)
        stored = (await self.store.next_from(subject, query.after_sequence + 1) if query.after_sequence
                  else await self.store.first_since(subject, query.since_ms))
        while stored is not None and builder.fits(stored.data):
            builder.add(stored.sequence, stored.data)
            stored = await self.store.next_from(subject, stored.sequence + 1)
        return builder.page(done=stored is None)

    def _count_refusal(self, label: str, reason: str) -> None:
        self.metrics.requests.labels("refused").inc()
        self.metrics.refused.labels(label).inc()
        log.warning("refused a catch-up request: %s", reason)

    async def _reply(self, message: Any, page: CatchupPage) -> None:
        with contextlib.suppress(Exception):  # the requester gave up or left: nothing to tell it
            await message.respond(catchup_batch_message(page).SerializeToString())


def requester(subject: str, reply: str | None) -> str:
    """The user a request is for (from the subject), if it may be answered at all."""
    try:
        user_id, channel = subjects.parse_user_subject(subject)
    except subjects.InvalidName as exc:
        raise Refused("subject", str(exc)) from None
    if channel is not subjects.Channel.CATCHUP:
        raise Refused("subject", f"{subject} is not a catch-up subject")
    if not reply:
        raise Refused("no_reply", "a request without a reply subject")
    if not reply.startswith((RESPONSE_IMPORT_PREFIX, subjects.inbox_prefix(user_id) + ".")):
        raise Refused("reply_subject", f"the reply subject is neither a response import nor {user_id}'s own inbox")
    return user_id

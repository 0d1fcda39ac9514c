"""Reading the commands an agent missed while it was away, from the catch-up service.

The live path is a plain subscription (it scales to 10,000 agents; SPEC §2.2). After a
(re)connect the agent requests ``tc.<uid>.catchup``: the platform's catch-up service
(``mt5fleet worker catchup``) answers with a page of the user's stored commands, from a
little before the connection was lost, and a cursor; the agent asks for the next page
until the service says ``done``. The agent needs no JetStream API permission at all, and
commands it already knows are harmless: the pipeline dedupes by command id.

Any failure (no responders, a timeout, a refusal, an invalid page) raises
:class:`CatchupFailed`: the caller retries, and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import nats.errors

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.catchup import CatchupQuery
from mt5fleet.proto.v1.catchup_pb2 import CatchupBatch
from mt5fleet.proto.validation import ValidationError, check_catchup_batch, decode
from mt5fleet.proto.validation_catchup import catchup_request_message

log = logging.getLogger("mt5fleet.agent.catchup")

PAGE_COMMANDS = 100
REQUEST_TIMEOUT_S = 3.0


class CatchupFailed(Exception):
    """The catch-up did not finish; ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


async def catch_up(nc: Any, user_id: str, since_ms: int, submit: Callable[[bytes], None],
                   *, timeout_s: float = REQUEST_TIMEOUT_S, page_commands: int = PAGE_COMMANDS) -> int:
    """Submit every command stored since ``since_ms``, page by page; returns how many were read."""
    subject = subjects.user_subject(user_id, subjects.Channel.CATCHUP)
    after, read, done = 0, 0, False
    while not done:
        page = await _page(nc, subject, CatchupQuery(since_ms=max(since_ms, 0), after_sequence=after,
                                                     max_commands=page_commands), timeout_s)
        for raw in page.commands:
            submit(raw)
        read += len(page.commands)
        after, done = page.last_sequence, page.done
    if read:
        log.info("caught up %d command(s) stored since %s", read, since_ms)
    return read


async def _page(nc: Any, subject: str, query: CatchupQuery, timeout_s: float) -> Any:
    request = catchup_request_message(query).SerializeToString()
    try:
        reply = await nc.request(subject, request, timeout=timeout_s)
    except Exception as exc:  # nats-py: NoRespondersError, TimeoutError, ConnectionClosedError...
        raise CatchupFailed(_label(exc), f"{type(exc).__name__} {exc}".strip()) from exc
    try:
        page = check_catchup_batch(decode(CatchupBatch, reply.data), query.after_sequence)
    except ValidationError as exc:
        raise CatchupFailed("invalid_page", str(exc)) from exc
    if page.error:
        raise CatchupFailed("refused", page.error)
    return page


def _label(exc: Exception) -> str:
    if isinstance(exc, nats.errors.NoRespondersError):
        return "no_responders"  # no catch-up service is running
    if isinstance(exc, TimeoutError):  # nats.errors.TimeoutError is one
        return "timeout"
    return "connection"

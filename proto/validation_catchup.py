"""Validation at the edge for catch-up: the service checks each request, the agent each page.

Same contract as ``validation`` (which re-exports these): every violation is listed in one
ValidationError. The user a request is for is never in it: the service takes it from the
subject. The encoders live here too, so both sides build the messages one way.
"""

from __future__ import annotations

from mt5fleet.proto.domain.catchup import MAX_PAGE_COMMANDS, CatchupPage, CatchupQuery
from mt5fleet.proto.v1.catchup_pb2 import CatchupBatch, CatchupRequest
from mt5fleet.proto.validation_rules import DEFAULT_LIMITS, Checks, Limits

# A request is three numbers: anything near this size is not one.
REQUEST_LIMITS = Limits(max_payload_bytes=256)


def check_catchup_request(msg: CatchupRequest, limits: Limits = REQUEST_LIMITS) -> CatchupQuery:
    checks = Checks(0, limits)
    checks.non_negative("since_ms", msg.since_ms)
    if msg.max_commands > MAX_PAGE_COMMANDS:
        checks.add("max_commands", f"max_commands {msg.max_commands} exceeds the page limit {MAX_PAGE_COMMANDS}")
    checks.raise_if_any("CatchupRequest")
    return CatchupQuery(since_ms=msg.since_ms, after_sequence=msg.after_sequence, max_commands=msg.max_commands)


def check_catchup_batch(msg: CatchupBatch, after_sequence: int, limits: Limits = DEFAULT_LIMITS) -> CatchupPage:
    """One page, checked against the cursor it was asked from: a page that repeats or
    reorders the stream, or a cursor that does not move, would make the agent page forever."""
    checks = Checks(0, limits)
    checks.text("error", msg.error)
    sequences = tuple(msg.sequences)
    if msg.error and (msg.commands or sequences):
        checks.add("error", "a refused request carries no commands")
    if len(msg.commands) != len(sequences):
        checks.add("sequences", f"{len(sequences)} sequences for {len(msg.commands)} commands")
    if len(msg.commands) > MAX_PAGE_COMMANDS:
        checks.add("commands", f"{len(msg.commands)} commands exceed the page limit {MAX_PAGE_COMMANDS}")
    _check_order(checks, sequences, after_sequence, msg.last_sequence)
    if not msg.error and not msg.done and msg.last_sequence <= after_sequence:
        checks.add("last_sequence", f"last_sequence {msg.last_sequence} does not move past {after_sequence} "
                                    "and the page is not the last")
    checks.raise_if_any("CatchupBatch")
    return CatchupPage(commands=tuple(msg.commands), sequences=sequences, last_sequence=msg.last_sequence,
                       done=msg.done, error=msg.error)


def _check_order(checks: Checks, sequences: tuple[int, ...], after_sequence: int, last_sequence: int) -> None:
    previous = after_sequence
    for index, sequence in enumerate(sequences):
        if sequence <= previous:
            checks.add(f"sequences[{index}]", f"sequence {sequence} does not follow {previous}")
            return
        previous = sequence
    if sequences and last_sequence < sequences[-1]:
        checks.add("last_sequence", f"last_sequence {last_sequence} is before the page's last command {previous}")


def catchup_request_message(query: CatchupQuery) -> CatchupRequest:
    return CatchupRequest(since_ms=query.since_ms, after_sequence=query.after_sequence,
                          max_commands=query.max_commands)


def catchup_batch_message(page: CatchupPage) -> CatchupBatch:
    return CatchupBatch(commands=list(page.commands), sequences=list(page.sequences),
                        last_sequence=page.last_sequence, done=page.done, error=page.error)

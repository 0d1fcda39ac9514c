"""Settle every command the ledger shows begun but never finished.

The agent may have died between ``order_send`` and recording the outcome, or the terminal
may have dropped while the order was being sent. The terminal knows what happened: the
order's magic number and comment carry the command id. Found: report what the terminal
did. Not found: the order never reached the broker, or the broker refused it; the agent
reports FAILED rather than trade again, since only the terminal could prove it did not
trade and it shows no trace either way.
"""

from __future__ import annotations

import logging

from mt5fleet.client.adapters.execution import Executor
from mt5fleet.client.adapters.ledger import CommandLedger
from mt5fleet.client.app.commands import CommandPipeline
from mt5fleet.client.app.mt5_thread import Mt5Thread
from mt5fleet.client.core.orders import Found, Outcome
from mt5fleet.proto.domain.clock import Clock, now_ms

log = logging.getLogger("mt5fleet.agent.recovery")

# Look this far around the command's arrival in the terminal's deal history.
HISTORY_MARGIN_S = 3_600


async def resolve_in_flight(*, ledger: CommandLedger, pipeline: CommandPipeline, executor: Executor,
                            mt5_thread: Mt5Thread, clock: Clock) -> int:
    """How many were settled; those the terminal cannot be asked about yet stay in flight."""
    settled = 0
    for entry in ledger.in_flight():
        since = entry.received_at_ms / 1000 - HISTORY_MARGIN_S
        until = now_ms(clock) / 1000 + 60
        try:
            found = await mt5_thread.run(executor.find, entry.command_id, since, until)
        except Exception as exc:  # terminal down: leave it in flight for the next look
            log.warning("cannot check %s in the terminal yet: %s", entry.command_id, exc)
            continue
        outcome = _from_found(found) if found else _not_found()
        log.warning("command %s was in flight when its outcome was lost: %s", entry.command_id, outcome.reason)
        pipeline.settle(entry, outcome, executed_ms=_done_ms(found, executor, entry.received_at_ms, now_ms(clock)))
        settled += 1
    return settled


def _done_ms(found: Found | None, executor: Executor, received_ms: int, now: int) -> int | None:
    """When the broker did it (MT5 tells it in server time), not when the agent found out;
    kept between the command's arrival and now, whatever an unsure offset says."""
    if found is None or not found.time_msc:
        return None
    return min(max(executor.terminal.utc_ms(found.time_msc), received_ms), now)


def _from_found(found: Found) -> Outcome:
    return Outcome(status="FILLED", retcode=0, retcode_class=None, order_ticket=found.order_ticket,
                   deal_ticket=found.deal_ticket, position_ticket=found.position_ticket, fill_price=found.price,
                   filled_volume=found.volume or 0.0, slippage_points=0.0, slippage_reference_points=0.0,
                   reason=f"recovered from the terminal after its outcome was lost (agent stopped or terminal "
                          f"dropped): the terminal holds its {found.kind.value}")


def _not_found() -> Outcome:
    return Outcome.no_trade("FAILED", "the agent stopped or the terminal dropped before the broker answered, and "
                                      "the terminal shows no trace; not sent again")

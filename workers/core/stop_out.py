"""Whether a user's agent is in its daily stop-out (SPEC §5b), read from what the agent
reports, so the worker skips the user (``stopped_out``) instead of sending opening
commands the agent would refuse. Pure: the reports come in, the state goes out.

The stop-out shows on the wire in the agent's execution reports, nowhere else:

* the close-all the agent sends itself at the breach, whose id is derived from the
  trading day (``ids.stop_out_close_all_id``): any report of it, filled or refused (the
  market may be closed), means the stop-out began;
* an opening command refused with reject code ``stopped_out``.

The block ends where the agent's ends: at the next trading day's start (17:00 New York).
An opening command the agent filled after the block began says it trades again (an
explicit reset on the agent) and lifts the block at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from mt5fleet.proto.domain.ids import stop_out_close_all_id
from mt5fleet.proto.domain.sessions import next_trading_day_start_ms, trading_day_start_ms
from mt5fleet.proto.domain.trading import CommandType, Execution, ExecutionStatus

STOPPED_OUT_REJECT_CODE = "stopped_out"    # the agent's RejectCode.STOPPED_OUT value on the wire
# The agent's own close-all is valid this long (client/app/account_guard.py): its report may
# come that long after the breach, possibly past the day's 17:00 New York boundary.
LOCAL_CLOSE_ALL_TTL_MS = 600_000


@dataclass(frozen=True, slots=True)
class StopOut:
    """The user's agent opens nothing from ``since_ms`` until ``until_ms``."""

    since_ms: int
    until_ms: int

    def is_active(self, now_ms: int) -> bool:
        return now_ms < self.until_ms


def after_report(current: StopOut | None, report: Execution, user_id: str) -> StopOut | None:
    """The stop-out of ``user_id`` once ``report`` (one of theirs) is known; ``current``
    when the report says nothing about it."""
    began = _announced(report, user_id)
    if began is not None:
        return began
    lifted = (report.command_type.opens and report.status.is_fill and current is not None
              and report.executed_at_ms >= current.since_ms)
    return None if lifted else current


def _announced(report: Execution, user_id: str) -> StopOut | None:
    """The stop-out this report announces, if it announces one."""
    if report.command_type.opens and report.status is ExecutionStatus.REJECTED \
            and report.reject_code == STOPPED_OUT_REJECT_CODE:
        return StopOut(report.executed_at_ms, next_trading_day_start_ms(report.executed_at_ms))
    if report.command_type is CommandType.CLOSE_ALL and not report.signal_id:
        handled = report.received_at_ms
        # The day the breach happened: the close-all's id names it.
        for day in {trading_day_start_ms(handled), trading_day_start_ms(handled - LOCAL_CLOSE_ALL_TTL_MS)}:
            if report.command_id == stop_out_close_all_id(user_id, day):
                return StopOut(handled, next_trading_day_start_ms(day))
    return None

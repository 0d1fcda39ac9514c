"""The economic calendar into the adjustment worker's decisions (issue 17).

The worker's ``UserState`` carries the calendar and the news window, and the ``news_window``
gate of ``workers.core.policy`` reads them. The calendar is followed here, beside the worker,
and put into each user's state as it is built: ``FleetState.user_state`` is wrapped on the
instance (the fleet state and the worker do not know the calendar; the worker's metrics
count a refused calendar value as ``invalid{kind="Calendar"}``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from mt5fleet.proto.domain.calendar import NewsWindow
from mt5fleet.proto.runtime.calendar_follow import CalendarBoard
from mt5fleet.workers.core.policy import UserState


class NewsFollower:
    def __init__(self, board: CalendarBoard, task: asyncio.Task[None]) -> None:
        self.board, self._task = board, task

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):  # noqa: S110 - stopping: its outcome no longer matters
            pass
        await self.board.close()


def with_news(state: Any, board: CalendarBoard, window: NewsWindow | None = None) -> None:
    """Every ``state.user_state(uid)`` from now on carries the board's current calendar and
    its window (the one the calendar worker publishes, which the agents use too), unless
    ``window`` overrides it (tests)."""
    plain = state.user_state

    def user_state(user_id: str) -> UserState:
        current = board.current
        return dataclasses.replace(plain(user_id), calendar=current, news_window=window or current.window)

    state.user_state = user_state


async def follow_news(worker: Any, nc: Any, window: NewsWindow | None = None) -> NewsFollower:
    """Follow the calendar for ``worker`` (an ``AdjustWorker``) in the background."""
    board = CalendarBoard(on_invalid=lambda why: worker.metrics.invalid.labels("Calendar").inc())
    with_news(worker.state, board, window)
    task = asyncio.create_task(board.follow(nc), name="calendar-follow")
    return NewsFollower(board, task)

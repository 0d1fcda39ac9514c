"""The economic calendar into the adjustment worker's decisions (issue 17).

The worker's ``UserState`` carries the calendar and the news window, and the ``news_window``
gate of ``workers.core.policy`` reads them. The calendar is followed here, beside the worker,
and ``FleetState.news`` hands it to each user's state as it is built (the worker's metrics
count a refused calendar value as ``invalid{kind="Calendar"}``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from mt5fleet.proto.domain.calendar import Calendar, NewsWindow
from mt5fleet.proto.runtime.calendar_follow import CalendarBoard


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
    def news() -> tuple[Calendar, NewsWindow]:
        current = board.current
        return current, window or current.window

    state.news = news


async def follow_news(worker: Any, nc: Any, window: NewsWindow | None = None) -> NewsFollower:
    """Follow the calendar for ``worker`` (an ``AdjustWorker``) in the background."""
    board = CalendarBoard(on_invalid=lambda why: worker.metrics.invalid.labels("Calendar").inc())
    with_news(worker.state, board, window)
    task = asyncio.create_task(board.follow(nc), name="calendar-follow")
    return NewsFollower(board, task)

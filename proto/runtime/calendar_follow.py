"""The economic calendar as every reader sees it: the last good value of the calendar KV key.

Read the way an agent can (its account imports exactly these two subjects, see
``operator.core.tenancy``): a plain subscription on the key's subject gets each put live,
and a direct get reads the current value at start and after every reconnect. Workers read it
the same way, so both sides decide from the same calendar. A value that cannot be read as a
whole keeps the last good calendar; refused entries inside a good value are counted, and the
events around them kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mt5fleet.proto import subjects
from mt5fleet.proto.domain import calendar

log = logging.getLogger("mt5fleet.calendar")


class CalendarBoard:
    """Holds the current calendar (``calendar.EMPTY`` until one is read)."""

    def __init__(self, *, on_invalid: Callable[[str], object] = lambda why: None) -> None:
        self.current: calendar.Calendar = calendar.EMPTY
        self.on_invalid = on_invalid
        self._subscription: Any = None

    def apply_raw(self, raw: bytes) -> bool:
        try:
            value, refused = calendar.from_json(raw)
        except calendar.CalendarError as exc:
            self.on_invalid(str(exc))
            log.warning("refused a calendar value, the last one stays: %s", exc)
            return False
        for reason in refused:
            self.on_invalid(reason)
            log.warning("refused a calendar entry: %s", reason)
        self.current = value
        return True

    def attach(self) -> None:
        """A new connection: the next ``follow`` subscribes on it."""
        self._subscription = None

    async def follow(self, nc: Any, *, retry_s: float = 2.0, attempts: int = 0) -> None:
        """Subscribe, then read the current value (``attempts`` 0: until it is read or found
        missing). Call again after a reconnect that needed a new connection."""
        if self._subscription is None:
            self._subscription = await nc.subscribe(subjects.calendar_key_subject(), cb=self._on_message)
        await self.load(nc, retry_s=retry_s, attempts=attempts)

    async def load(self, nc: Any, *, retry_s: float = 2.0, attempts: int = 0) -> None:
        from nats.js.errors import NotFoundError

        tried = 0
        while True:
            tried += 1
            try:
                message = await nc.jetstream().get_msg(subjects.calendar_stream_name(),
                                                       subject=subjects.calendar_key_subject(), direct=True)
            except NotFoundError:
                return  # nothing published yet: the subscription brings the first one
            except Exception as exc:  # the bucket not there yet, or the connection away
                log.debug("reading the calendar: %s", exc)
                if attempts and tried >= attempts:
                    return
                await asyncio.sleep(retry_s)
                continue
            if message.data and not _deleted(message.headers):
                self.apply_raw(message.data)
            return

    async def _on_message(self, message: Any) -> None:
        if message.data and not _deleted(message.headers):
            self.apply_raw(message.data)

    async def close(self) -> None:
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception:  # the connection already closed
                pass
            self._subscription = None


def _deleted(headers: Any) -> bool:
    return bool(headers) and headers.get("KV-Operation") in ("DEL", "PURGE")

"""Where the economic calendar comes from: one interface, two adapters.

``FileCalendarSource`` reads a file (an air-gapped cluster's mounted ConfigMap, the demo);
``HttpCalendarSource`` downloads the weekly export a calendar site publishes
(``https://nfs.faireconomy.media/ff_calendar_thisweek.json``, its ``.xml``, or an ``.ics``).
Both return the document's text and its format; ``mt5fleet.proto.domain.calendar`` parses it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mt5fleet.proto.domain.calendar import format_of

# The weekly export is tens of kilobytes; anything far larger is not a calendar.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
HTTP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Document:
    text: bytes
    fmt: str        # ff-json, ff-xml or ical
    origin: str     # the file or URL, for logs and the calendar's ``source``


class CalendarSource(Protocol):
    async def fetch(self) -> Document: ...


@dataclass(frozen=True)
class FileCalendarSource:
    path: Path
    fmt: str = ""

    async def fetch(self) -> Document:
        def read() -> bytes:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_DOCUMENT_BYTES + 1)
            if len(data) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"{self.path}: larger than {MAX_DOCUMENT_BYTES} bytes, not a calendar export")
            return data

        return Document(await asyncio.to_thread(read), self.fmt or format_of(self.path.name), str(self.path))


@dataclass(frozen=True)
class HttpCalendarSource:
    url: str
    fmt: str = ""

    async def fetch(self) -> Document:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.url) as response:
            response.raise_for_status()
            data = await response.content.read(MAX_DOCUMENT_BYTES + 1)
        if len(data) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{self.url}: larger than {MAX_DOCUMENT_BYTES} bytes, not a calendar export")
        return Document(data, self.fmt or format_of(self.url), self.url)


def calendar_source(location: str, fmt: str = "") -> CalendarSource:
    """``https://...`` (or ``http://``) downloads, anything else is a file path."""
    if location.startswith(("https://", "http://")):
        return HttpCalendarSource(location, fmt)
    return FileCalendarSource(Path(location.removeprefix("file://")), fmt)

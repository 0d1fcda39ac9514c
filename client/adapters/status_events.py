"""``/events``: the status page kept live by server-sent events, and its static assets.

Every ``update_every_s`` the page gets one ``update`` event: the sections whose HTML
changed since the last event it got, the chart samples newer than those it already has,
the fills to mark, and the traded symbols. The first event of a connection is ``full``:
a browser's EventSource reconnects by itself (an agent restart), and then the page starts
its charts again rather than appending a second copy.

Server-sent events rather than a WebSocket: the page only listens, and an EventSource
reconnects without a line of our code. The stream stops when the app shuts down
(``stop_on_shutdown``): an open page must not hold the agent's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from mt5fleet.client.adapters import status_page

if TYPE_CHECKING:
    from mt5fleet.client.adapters.status import AgentStatus

_STOP = web.AppKey("status_events_stop", asyncio.Event)
# The page's assets, shipped in the wheel: the vendored uPlot (MIT, its licence beside it) and ours.
STATIC = {
    "uPlot.iife.min.js": "application/javascript", "uPlot.min.css": "text/css", "uPlot.LICENSE": "text/plain",
    "page.js": "application/javascript", "page.css": "text/css", "VENDORED.md": "text/plain",
}


def stop_on_shutdown(app: web.Application) -> None:
    app[_STOP] = asyncio.Event()

    async def stop(app: web.Application) -> None:
        app[_STOP].set()

    app.on_shutdown.append(stop)


def fills(status: AgentStatus) -> list[dict]:
    """This user's fills, as markers: where (time, price), which way, and the two entries."""
    out = []
    for c in status.commands:
        if c.status not in ("FILLED", "PARTIAL") or not c.fill_price or not c.symbol:
            continue
        side = "buy" if c.order_type.startswith("BUY") else "sell"
        if c.type != "OPEN_POSITION":  # a close trades the other way round
            side = "sell" if side == "buy" else "buy"
        out.append({"command_id": c.command_id, "symbol": c.symbol, "t": c.at_ms / 1000, "price": c.fill_price,
                    "side": side, "reference": c.reference_entry, "adjusted": c.adjusted_entry})
    return out


class PageStream:
    """One open page: what it has been sent so far."""

    def __init__(self) -> None:
        self.sections: dict[str, str] = {}
        self.cursors: dict[str, int] = {}
        self.first = True

    def update(self, status: AgentStatus) -> dict:
        sections = {name: body for name, body in status_page.sections(status).items()
                    if self.sections.get(name) != body}
        self.sections.update(sections)
        charts = status.charts
        # since() and cursors() run with no await between them: no sample falls in the gap.
        series = charts.since({} if self.first else self.cursors) if charts is not None else {}
        self.cursors = charts.cursors() if charts is not None else {}
        payload = {"full": self.first, "at": time.time(), "sections": sections, "series": series,
                   "fills": fills(status), "traded": list(status.trading_symbols), "currency": status.currency}
        self.first = False
        return payload


def handler(status: Callable[[], AgentStatus], every_s: float):
    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        stop, page = request.app[_STOP], PageStream()
        with contextlib.suppress(ConnectionError):  # the page went away
            while not stop.is_set():
                body = json.dumps(page.update(status()), separators=(",", ":"), allow_nan=False)
                await response.write(f"retry: 2000\nevent: update\ndata: {body}\n\n".encode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every_s)
        return response

    return events


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:  # a fixed list: no path from the request ever reaches the disk
        raise web.HTTPNotFound()
    body = resources.files("mt5fleet.client.adapters").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=STATIC[name], headers={"Cache-Control": "max-age=300"})

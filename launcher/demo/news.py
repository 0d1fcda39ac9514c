"""The demo's economic calendar: one high-impact USD event a minute into the run, written as
the weekly calendar export's JSON (``ff_calendar_thisweek.json``), its time in New York with
the UTC offset of that day, the way the published export states it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from mt5fleet.proto.domain.calendar import NewsWindow
from mt5fleet.proto.domain.sessions import NEW_YORK

NEWS_EVENT_IN_MS = 60_000
NEWS_EVENT_TITLE = "Non-Farm Employment Change"
# The platform default is 15 min either side; a demo lasts a minute or two, so its window is
# 45 s before to 30 s after the event: trading first, then the window, in one short run.
DEMO_WINDOW = NewsWindow(before_ms=45_000, after_ms=30_000)


def write_demo_calendar(path: Path, event_ms: int | None) -> Path:
    """The calendar file: empty until the run starts (``event_ms`` None)."""
    if event_ms is None:
        path.write_text("[]")
        return path
    when = dt.datetime.fromtimestamp(event_ms / 1000, tz=NEW_YORK).replace(microsecond=0)
    rows = [
        {"title": NEWS_EVENT_TITLE, "country": "USD", "date": when.isoformat(), "impact": "High",
         "forecast": "180K", "previous": "143K"},
        # Not high impact: no window, whatever the user's setting.
        {"title": "German Factory Orders m/m", "country": "EUR", "date": when.isoformat(), "impact": "Low",
         "forecast": "", "previous": ""},
    ]
    path.write_text(json.dumps(rows, indent=1))
    return path

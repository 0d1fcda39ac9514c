"""``mt5fleet worker calendar``: the economic calendar into JetStream, on a schedule.

Every ``interval_s`` the source (a file, or a calendar site's weekly export) is read and
parsed; its high-impact events, from a day ago on, are put as one value into the calendar
KV bucket (``subjects.CALENDAR_BUCKET``) that every adjustment worker and agent reads. Only
high-impact events are kept: they are what a news window is for, and they keep the value a
few kilobytes, under the smallest tier's payload limit.

Bad entries are refused, logged with their reason and counted; the good ones around them
are kept. A refresh that fails as a whole (the site away, a document that is not a calendar)
keeps the last calendar in the bucket, is counted, and fails ``/readyz`` once nothing has
been refreshed for ``stale_after_s``. A value equal to the current one is not put again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from mt5fleet.proto import subjects
from mt5fleet.proto.domain import calendar
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.probes import Health
from mt5fleet.proto.subjects import JetStreamLayout
from mt5fleet.workers.adapters.calendar_source import CalendarSource

log = logging.getLogger("mt5fleet.worker.calendar")

DEFAULT_INTERVAL_S = 900.0      # the weekly export changes a few times a day at most
STALE_AFTER_S = 3 * 3600.0
KEEP_PAST_MS = 86_400_000       # events more than a day old are of no use to a window


class CalendarMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.refreshes = Counter("mt5fleet_calendar_refreshes_total", "Calendar refreshes, by result (ok, error)",
                                 ["result"], registry=r)
        self.refused = Counter("mt5fleet_calendar_refused_entries_total",
                               "Calendar entries refused as invalid (each logged with its reason)", registry=r)
        self.untimed = Counter("mt5fleet_calendar_untimed_entries_total",
                               "Calendar entries without an instant (all day, tentative): no window", registry=r)
        self.events = Gauge("mt5fleet_calendar_high_impact_events", "High-impact events in the published calendar",
                            registry=r)
        self.refreshed_at = Gauge("mt5fleet_calendar_last_refresh_timestamp_seconds",
                                  "When the calendar was last refreshed", registry=r)


class CalendarService:
    def __init__(self, nc: Any, source: CalendarSource, *, interval_s: float = DEFAULT_INTERVAL_S,
                 layout: JetStreamLayout | None = None, metrics: CalendarMetrics | None = None,
                 now_ms: Callable[[], int] | None = None, stale_after_s: float = STALE_AFTER_S,
                 window: calendar.NewsWindow | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"the calendar refresh interval must be positive, got {interval_s}")
        self.nc, self.source, self.interval_s = nc, source, interval_s
        self.layout = layout or JetStreamLayout()
        self.window = window or calendar.NewsWindow()   # the platform's news window, published with the events
        self.metrics = metrics or CalendarMetrics()
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.last_ok: float | None = None
        self._published = b""
        self._stop = asyncio.Event()
        self.health = Health(registry=self.metrics.registry, connected=lambda: nc.is_connected)
        started = time.monotonic()
        self.health.add("refreshed", lambda: self._problem(started, stale_after_s))

    def _problem(self, started: float, budget_s: float) -> str | None:
        since = self.last_ok if self.last_ok is not None else started
        if time.monotonic() - since > budget_s:
            return f"no calendar refreshed for {time.monotonic() - since:.0f} s"
        return None

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.refresh_once()
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def refresh_once(self) -> calendar.Calendar | None:
        try:
            document = await self.source.fetch()
            parsed = calendar.parse(document.text, document.fmt)
        except Exception as exc:  # the site away, or no calendar at all: keep the last one
            self.metrics.refreshes.labels("error").inc()
            log.warning("calendar refresh failed, the last calendar stays: %s", exc)
            return None
        for reason in parsed.refused:
            log.warning("refused a calendar entry of %s: %s", document.origin, reason)
        self.metrics.refused.inc(len(parsed.refused))
        self.metrics.untimed.inc(parsed.untimed)
        now = self.now_ms()
        kept = tuple(e for e in parsed.events if e.impact is calendar.Impact.HIGH and e.at_ms >= now - KEEP_PAST_MS)
        result = calendar.Calendar(kept, source=document.origin, fetched_at_ms=now, window=self.window)
        try:
            await self.publish(result)
        except Exception as exc:
            self.metrics.refreshes.labels("error").inc()
            log.warning("putting the calendar into JetStream failed: %s", exc)
            return None
        self.metrics.refreshes.labels("ok").inc()
        self.metrics.events.set(len(kept))
        self.metrics.refreshed_at.set(now / 1000)
        self.last_ok = time.monotonic()
        return result

    async def publish(self, result: calendar.Calendar) -> None:
        # The value without its fetch time: an unchanged calendar is not put again.
        same = calendar.to_json(calendar.Calendar(result.events, source=result.source, window=result.window))
        if same == self._published:
            return
        js = self.nc.jetstream()
        await bootstrap.create_missing(js, self.layout, subjects.CALENDAR_BUCKET)
        kv = await js.key_value(subjects.CALENDAR_BUCKET)
        await kv.put(subjects.CALENDAR_KEY, calendar.to_json(result))
        self._published = same
        log.info("calendar published: %d high-impact event(s) from %s", len(result.events), result.source)

    async def stop(self) -> None:
        self._stop.set()

"""``mt5fleet worker adjust|marketdata|feedback|health|catchup|calendar``: one asyncio main per worker kind.

Each connects to NATS, serves ``/metrics``, ``/healthz`` and ``/readyz`` for Kubernetes
probes, and on SIGTERM stops taking work, hands its partitions over (adjust), drains the
NATS connection and exits 0. If its work ends by itself (a crash), it cleans up the same
way and exits non-zero, so Kubernetes restarts it and says why.

``/readyz`` is the service's ``Health`` (proto/runtime/probes.py): NATS connected and every
check of its job within budget (adjust: leases renewed, prices and state followed,
partitions pulled; marketdata: ticks published while the market is open; feedback:
reports pulled; health: heartbeats followed; catchup: requests served), each failing one
named with its reason. ``/healthz`` fails once a check has failed for so long, while
connected, that only a restart can help. The checks are evaluated every second, so each
transition is logged and counted even when nobody probes.

The JetStream layout (``--jetstream-config``, ``--replicas``: the same as given to
``mt5fleet nats bootstrap``) is what a worker re-creates a missing stream, bucket or
consumer from.

The market-data worker's reference feed (OANDA, or the simulated one for a demo or a test)
and the clock its ticks are stamped with are injected: the launcher chooses and builds
them, so nothing here knows the simulator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from mt5fleet.proto.domain.calendar import NewsWindow
from mt5fleet.proto.domain.clock import Clock, SystemClock, now_ms
from mt5fleet.proto.runtime import natsconn
from mt5fleet.proto.runtime.probes import Health, probe_app
from mt5fleet.proto.runtime.tasks import cancel_and_wait, stop_on_signals
from mt5fleet.proto.subjects import JetStreamLayout
from mt5fleet.workers.adapters.calendar_source import CalendarSource
from mt5fleet.workers.adapters.feeds import ReferenceTickFeed

log = logging.getLogger("mt5fleet.worker")


@dataclass(frozen=True)
class WorkerOptions:
    kind: str
    nats: natsconn.NatsSettings
    http_host: str = "0.0.0.0"  # noqa: S104  (in-cluster: the probes and Prometheus come from outside the pod)
    http_port: int = 9465
    partitions: int = 8
    feed: ReferenceTickFeed | None = None                     # marketdata only
    feed_clock: Clock = field(default_factory=SystemClock)   # the clock the feed's ticks are stamped with
    layout: JetStreamLayout = field(default_factory=JetStreamLayout)  # what a missing resource is re-created from
    news_window: NewsWindow = field(default_factory=NewsWindow)          # calendar: published with the events
    calendar_source: CalendarSource | None = None                       # calendar only: file or URL
    calendar_interval_s: float = 900.0                                  # calendar: refresh period


@dataclass
class Service:
    registry: CollectorRegistry
    run: Callable[[], Awaitable[Any]]
    stop: Callable[[], Awaitable[Any]]
    health: Health | None = None


async def build_service(options: WorkerOptions, nc: Any) -> Service:
    layout = options.layout
    if options.kind == "adjust":
        from mt5fleet.workers.app.adjust_service import AdjustWorker
        from mt5fleet.workers.app.news import follow_news

        worker = AdjustWorker(nc, partitions=options.partitions, layout=layout, settle_heap=True)
        news = await follow_news(worker, nc)   # the window comes with the calendar
        await worker.start()

        async def stop() -> None:
            await worker.stop()
            await news.close()
        return Service(worker.metrics.registry, _forever, stop, worker.health)
    if options.kind == "calendar":
        from mt5fleet.workers.app.calendar_service import CalendarService

        if options.calendar_source is None:
            raise ValueError("the calendar worker needs --calendar-source FILE or URL")
        service = CalendarService(nc, options.calendar_source, interval_s=options.calendar_interval_s, layout=layout,
                                  window=options.news_window)
        return Service(service.metrics.registry, service.run, service.stop, service.health)
    if options.kind == "catchup":
        from mt5fleet.workers.app.catchup_service import CatchupService

        catchup = CatchupService(nc)
        await catchup.start()
        return Service(catchup.metrics.registry, _forever, catchup.stop, catchup.health)
    if options.kind == "feedback":
        from mt5fleet.workers.app.feedback_service import FeedbackWorker

        feedback = FeedbackWorker(nc, layout=layout)
        return Service(feedback.metrics.registry, feedback.run, _async(feedback.stop), feedback.health)
    if options.kind == "health":
        from mt5fleet.workers.app.health_exporter import FleetHealth

        health = FleetHealth()
        follower = await health.follow(nc, layout=layout)
        return Service(health.registry(), _forever, follower.stop, health.health)
    if options.kind == "marketdata":
        from mt5fleet.workers.app.marketdata_service import MarketDataWorker

        feed, clock = options.feed, options.feed_clock
        if feed is None:
            raise ValueError("the marketdata worker needs a reference feed")
        # Timestamps from the feed's clock: a simulated instant and the wall clock must not mix.
        worker = MarketDataWorker(nc, feed, now_ms=lambda: now_ms(clock), layout=layout)
        return Service(worker.metrics.registry, worker.run, feed.close, worker.health)
    raise ValueError(f"unknown worker kind {options.kind!r}: adjust, marketdata, feedback, health, catchup or calendar")


async def _forever() -> None:
    await asyncio.Event().wait()


def _async(function: Callable[[], Any]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        function()
    return call


async def run_worker(options: WorkerOptions,
                     build: Callable[[WorkerOptions, Any], Awaitable[Service]] = build_service) -> None:
    nc = await natsconn.connect(options.nats)
    service = await build(options, nc)
    runner = web.AppRunner(probe_app(service.registry, nc, service.health), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, options.http_host, options.http_port).start()
    log.info("%s worker running; metrics on :%d/metrics", options.kind, options.http_port)
    stop = stop_on_signals()
    work = asyncio.create_task(service.run(), name=f"{options.kind}-work")
    stopping = asyncio.create_task(stop.wait())
    watching = asyncio.create_task(service.health.watch() if service.health else _forever(), name="health")
    await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    crashed = work.done() and not stop.is_set()
    log.info("stopping the %s worker%s", options.kind, " after its work ended by itself" if crashed else "")
    await service.stop()
    await cancel_and_wait([work, stopping, watching])
    await nc.drain()
    await runner.cleanup()
    if crashed:
        # Exit non-zero with the cause: a worker that quietly stopped working would look healthy.
        work.result()  # re-raises the work's exception, if it had one
        raise RuntimeError(f"the {options.kind} worker's work ended without being asked to stop")

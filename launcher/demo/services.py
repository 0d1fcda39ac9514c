"""The demo's platform services: the embedded nats-server, NATS connections, the in-process pool of
adjustment-worker replicas, the market-data, feedback, health and catch-up workers, and the operator in
local mode, each started on an AsyncExitStack that stops it again."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mt5fleet.client.adapters.status import bound_port, serve
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.launcher.demo.view import (
    Endpoint,
    UserRow,
)
from mt5fleet.launcher.simulated_feed import SimulatedFeed
from mt5fleet.operator.adapters.nats_accounts import TrustChain
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.app import runtime
from mt5fleet.operator.app.local import LocalOperator
from mt5fleet.proto.domain.calendar import NewsWindow
from mt5fleet.proto.domain.clock import Clock, now_ms
from mt5fleet.proto.runtime import natsconn, tlsgen
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats, TlsFiles
from mt5fleet.proto.runtime.natsconn import NatsSettings
from mt5fleet.proto.runtime.probes import probe_app
from mt5fleet.proto.runtime.tasks import cancel_and_wait
from mt5fleet.workers.adapters.calendar_source import FileCalendarSource
from mt5fleet.workers.app.adjust_service import AdjustWorker
from mt5fleet.workers.app.calendar_service import CalendarService
from mt5fleet.workers.app.catchup_service import CatchupService
from mt5fleet.workers.app.feedback_service import FeedbackWorker
from mt5fleet.workers.app.health_exporter import FleetHealth
from mt5fleet.workers.app.marketdata_service import MarketDataWorker
from mt5fleet.workers.app.news import follow_news
from mt5fleet.workers.app.runner import Service

log = logging.getLogger("mt5fleet.demo")

LOCALHOST = "127.0.0.1"
USERS_PER_WORKER = 2            # small, so that even the demo's fleet shows a pool of replicas
LEASE_TTL_MS = 3_000            # partitions balance within a few seconds


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def log_file(self) -> Path:
        return self.root / "demo.log"

    @property
    def clients(self) -> Path:
        return self.root / "clients"

    @property
    def secrets(self) -> Path:
        return self.root / "operator" / "secrets"

    @property
    def private(self) -> Path:
        folder = self.root / "private"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def agent_dir(self, user_id: str) -> Path:
        return self.root / "agents" / user_id


# ---------------------------------------------------------------------- components
async def quietly(what: str, step: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> None:
    """A bounded clean-up step whose failure is logged, never raised."""
    try:
        await asyncio.wait_for(step(), timeout)
    except Exception as exc:  # TimeoutError included: the next step must run anyway
        log.warning("stopping %s: %r", what, exc)


def start_nats(stack: AsyncExitStack, paths: RunPaths, chain: TrustChain) -> EmbeddedNats:
    bundle = tlsgen.generate(paths.private / "tls")
    server = EmbeddedNats(server_name="mt5fleet-demo", store_dir=paths.root / "nats",
                          tls=TlsFiles(cert=bundle.server_cert, key=bundle.server_key),
                          operator=chain.server_mode())
    stack.callback(_stop_server, server, paths)
    server.start()
    return server


@contextlib.contextmanager
def reopened_demo_nats(run_dir: Path) -> Iterator[NatsSettings]:
    """A finished demo's nats-server again, on the run's own store, trust chain and TLS, for
    reading what the run left (``mt5fleet audit --demo-run``); stopped on leaving. The
    settings connect as the platform's service user, once, without reconnecting."""
    from mt5fleet.operator.adapters.nats_accounts import TrustChain

    paths = RunPaths(Path(run_dir))
    private, tls = paths.root / "private", paths.root / "private" / "tls"
    if not (private / "trust.json").exists() or not (paths.root / "nats").is_dir():
        raise ValueError(f"{run_dir} is not the run folder of an `mt5fleet demo` (no private/trust.json or nats/)")
    chain = TrustChain.from_json((private / "trust.json").read_text())
    server = EmbeddedNats(server_name="mt5fleet-demo", store_dir=paths.root / "nats",
                          tls=TlsFiles(cert=tls / "server.pem", key=tls / "server-key.pem"),
                          operator=chain.server_mode())
    with server:
        yield NatsSettings(servers=(server.url,), name="mt5fleet-audit", creds_file=str(private / "service.creds"),
                           tls_ca=str(tls / "ca.pem"), reconnect=False, max_reconnect_attempts=1)


def _stop_server(server: EmbeddedNats, paths: RunPaths) -> None:
    server.stop()
    with contextlib.suppress(OSError):
        shutil.copy(server.log_path, paths.root / "nats-server.log")
    server.close()


def write_secret_file(path: Path, text: str) -> Path:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    return path


async def connect(stack: AsyncExitStack, settings: NatsSettings, name: str, **options: Any) -> Any:
    """``options``: nats-py's (``inbox_prefix``, callbacks)."""
    nc = await natsconn.connect(dataclasses.replace(settings, name=name), **options)
    stack.push_async_callback(quietly, f"NATS connection {name}", nc.drain, 5)
    return nc


async def serve_service(stack: AsyncExitStack, name: str, settings: NatsSettings,
                        build: Callable[[Any], Awaitable[Service]]) -> Endpoint:
    """One worker as ``mt5fleet worker`` runs it: its own connection, its work as a task,
    /metrics on a local port; stopped in the reverse order."""
    nc = await connect(stack, settings, f"mt5fleet-{name}")
    service = await build(nc)
    stack.push_async_callback(quietly, name, service.stop)
    work = asyncio.create_task(service.run(), name=name)
    stack.push_async_callback(cancel_and_wait, [work])
    if service.health is not None:  # transitions logged as in ``mt5fleet worker``
        watching = asyncio.create_task(service.health.watch(), name=f"{name} health")
        stack.push_async_callback(cancel_and_wait, [watching])
    runner = await serve(probe_app(service.registry, nc, service.health), LOCALHOST, 0)
    stack.push_async_callback(runner.cleanup)
    return Endpoint(name, f"http://{LOCALHOST}:{bound_port(runner)}/metrics")


async def _forever() -> None:
    await asyncio.Event().wait()


class WorkerPool:
    """The adjustment-worker pool the operator scales (``appliers.Scaler``): in-process
    replicas, each with its own NATS connection as the service user and its own /metrics."""

    def __init__(self, settings: NatsSettings, clock: Clock, on_skip: Callable[[str, str, str], None]) -> None:
        self.settings, self.clock, self.on_skip = settings, clock, on_skip
        self.running: list[tuple[AdjustWorker, AsyncExitStack, Endpoint]] = []
        self._started = 0

    async def replicas(self) -> int | None:
        return len(self.running)

    async def scale(self, replicas: int) -> None:
        while len(self.running) < replicas:
            await self._start_one()
        while len(self.running) > replicas:
            _, stack, endpoint = self.running.pop()
            log.info("stopping %s", endpoint.name)
            await stack.aclose()

    async def close(self) -> None:
        await self.scale(0)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [endpoint for _, _, endpoint in self.running]

    @property
    def workers(self) -> list[AdjustWorker]:
        return [worker for worker, _, _ in self.running]

    async def _start_one(self) -> None:
        self._started += 1
        name = f"adjust-{self._started}"
        holder: list[AdjustWorker] = []

        async def build(nc: Any) -> Service:
            worker = AdjustWorker(nc, on_skip=self.on_skip, replica_id=f"demo-{name}",
                                          lease_ttl_ms=LEASE_TTL_MS, now_ms=lambda: now_ms(self.clock))
            news = await follow_news(worker, nc)   # the economic calendar and its window (issue 17)
            await worker.start()
            holder.append(worker)

            async def stop() -> None:
                await worker.stop()
                await news.close()
            return Service(worker.metrics.registry, _forever, stop, worker.health)

        stack = AsyncExitStack()
        try:
            endpoint = await serve_service(stack, f"{name} worker", self.settings, build)
        except BaseException:
            await stack.aclose()
            raise
        self.running.append((holder[0], stack, endpoint))
        log.info("started adjustment replica %s", name)


async def start_workers(stack: AsyncExitStack, settings: NatsSettings, feed: ReferenceFeed,
                        clock: Clock) -> list[Endpoint]:
    """Market data (the simulated reference feed), execution feedback, fleet health and the
    catch-up service (agents read the commands they missed through it)."""
    def clock_ms() -> int:
        return now_ms(clock)

    async def marketdata(nc: Any) -> Service:
        ticks = SimulatedFeed(feed, clock=clock)
        worker = MarketDataWorker(nc, ticks, now_ms=clock_ms)
        return Service(worker.metrics.registry, worker.run, ticks.close, worker.health)

    async def feedback(nc: Any) -> Service:
        worker = FeedbackWorker(nc, now_ms=clock_ms)

        async def stop() -> None:
            worker.stop()
        return Service(worker.metrics.registry, worker.run, stop, worker.health)

    async def health(nc: Any) -> Service:
        exporter = FleetHealth(now_ms=clock_ms)
        follower = await exporter.follow(nc)
        return Service(exporter.registry(), _forever, follower.stop, exporter.health)

    async def catchup(nc: Any) -> Service:
        service = CatchupService(nc)
        await service.start()
        return Service(service.metrics.registry, _forever, service.stop, service.health)

    return [await serve_service(stack, f"{name} worker", settings, build)
            for name, build in (("marketdata", marketdata), ("feedback", feedback), ("health", health),
                                ("catchup", catchup))]


async def start_calendar(stack: AsyncExitStack, settings: NatsSettings, calendar_file: Path, clock: Clock,
                         window: NewsWindow) -> tuple[Endpoint, CalendarService]:
    """The calendar worker over a file, as in an air-gapped cluster: the demo's calendar."""
    holder: list[CalendarService] = []

    async def calendar(nc: Any) -> Service:
        service = CalendarService(nc, FileCalendarSource(calendar_file), interval_s=30,
                                  now_ms=lambda: now_ms(clock), window=window)
        await service.refresh_once()   # in the bucket before the first signal
        holder.append(service)
        return Service(service.metrics.registry, service.run, service.stop, service.health)

    endpoint = await serve_service(stack, "calendar worker", settings, calendar)
    return endpoint, holder[0]


@dataclass
class OperatorHandle:
    local: LocalOperator
    secrets: DirectorySecretStore
    endpoint: Endpoint


async def start_operator(stack: AsyncExitStack, paths: RunPaths, settings: NatsSettings, trust_file: Path,
                         ca_file: Path, pool: WorkerPool, clock: Clock) -> OperatorHandle:
    options = runtime.OperatorOptions(
        nats=dataclasses.replace(settings, name="mt5fleet-operator"), trust_file=trust_file,
        agent_nats_urls=settings.servers, agent_ca_file=ca_file, http_host=LOCALHOST, http_port=0,
        users_per_worker=USERS_PER_WORKER)
    secrets = DirectorySecretStore(paths.secrets)
    stack.push_async_callback(quietly, "the adjustment-worker pool", pool.close, 15)
    running = await runtime.start(options, secrets, scaler=pool, now_ms=lambda: now_ms(clock))
    stack.push_async_callback(quietly, "the operator's connections", running.close)
    http = await runtime.serve_http(running.metrics, running.nc, LOCALHOST, 0)
    stack.push_async_callback(http.cleanup)
    local = LocalOperator(paths.clients, running.reconciler, secrets, poll_s=0.5, observe_s=2.0)
    stop = asyncio.Event()
    task = asyncio.create_task(local.run(stop), name="operator")

    async def stop_operator() -> None:
        stop.set()
        await cancel_and_wait([task], timeout=10)
    stack.push_async_callback(stop_operator)
    return OperatorHandle(local, secrets, Endpoint("operator", f"http://{LOCALHOST}:{bound_port(http)}/metrics"))


def operator_rows(handle: OperatorHandle, presets: dict[str, str]) -> list[UserRow]:
    """Tier, phase and conditions of every TradingClient, as the operator last wrote them."""
    rows = []
    for tracked in sorted(handle.local.tracked.values(), key=lambda t: t.key):
        tier, _ = handle.local.reconciler.fleet.by_key.get(tracked.key, ("?", ""))
        conditions = {c.type: c for c in tracked.status.conditions}
        compliant = conditions.get("TierCompliant")
        agent = conditions.get("AgentConnected")
        rows.append(UserRow(user_id=tracked.user_id, tier=tier, broker=presets.get(tracked.user_id, "?"),
                            phase=tracked.status.phase, compliant=compliant is None or compliant.status == "True",
                            compliance=compliant.message if compliant else "",
                            agent=agent.reason if agent else "-"))
    return rows

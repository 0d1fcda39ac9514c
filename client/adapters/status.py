"""The agent's local HTTP endpoints: a status page for the trader (live over server-sent
events on /events, its assets under /static/, charts from the vendored uPlot: no CDN, the
VPS may be offline), /api/status as JSON, /metrics for Prometheus, /readyz and /healthz.
Bound to localhost by default: it shows account figures and positions, which are nobody
else's business.

``/readyz`` answers 503 with the reasons while the agent does not do its job within its
budgets (no prices while the market is open, NATS or the terminal away, the outbox not
draining, the catch-up failing, the disk refusing writes); ``/healthz`` answers 503 only
when the agent is wedged beyond its own recovery (a stuck MT5 call, a stopped loop): a
supervisor restarts it then, and only then."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mt5fleet.client.adapters import status_events, status_page
from mt5fleet.client.core.history import ChartHistory
from mt5fleet.client.core.risk_view import RiskState


@dataclass(frozen=True)
class QuoteRow:
    symbol: str
    broker_symbol: str
    bid: float
    ask: float
    spread_points: int
    age_s: float


@dataclass(frozen=True)
class PositionRow:
    ticket: int
    symbol: str
    side: str
    volume: float
    price_open: float
    sl: float
    tp: float
    profit: float
    command_id: str


@dataclass(frozen=True)
class CommandRow:
    command_id: str
    type: str
    symbol: str
    status: str
    reason: str
    fill_price: float
    slippage_points: float
    at_ms: int
    order_type: str = ""
    lots: float = 0.0
    lot_why: str = ""                 # the agent's risk check on that lot
    sizing_reason: str = ""           # the server's words: why this lot size ("" when it did not say)
    filled_volume: float = 0.0
    reference_entry: float = 0.0      # the signal's entry on the reference feed
    adjusted_entry: float = 0.0       # the entry adjusted to this broker's prices
    adjustment: float = 0.0           # adjusted - reference, quote currency
    adjustment_reason: str = ""
    slippage_reference_points: float = 0.0
    latency_ms: int | None = None     # signal created -> filled


@dataclass(frozen=True)
class IndicatorRow:
    symbol: str
    sma_20: float
    ema_12: float
    rsi: float
    macd_line: float
    session_open: bool
    sma_50: float = 0.0
    ema_26: float = 0.0
    macd_signal: float = 0.0
    bollinger_upper: float = 0.0
    bollinger_lower: float = 0.0


@dataclass(frozen=True)
class ServerTime:
    """The offset the agent converts the terminal's times to UTC with."""

    offset_s: int            # server time minus UTC, now
    rule: str                # new_york_close (GMT+2/+3 with US daylight saving) or fixed
    source: str              # measured, weekly_close, persisted or assumed
    confirmed_at_ms: int     # when the terminal's ticks last showed it (0: never)
    label: str               # "UTC+02:00 (GMT+2/+3 New York close, measured)"


@dataclass(frozen=True)
class HealthRow:
    reason: str      # core.health.Reason
    detail: str
    for_s: float     # since when it holds


@dataclass(frozen=True)
class CatchupRow:
    state: str       # idle, running, failing, done
    attempts: int
    error: str
    failing_for_s: float
    since_ms: int
    done_at_ms: int


@dataclass(frozen=True)
class ClockRow:
    """The host clock against the broker's, measured on fresh ticks."""

    skew_s: float | None   # host minus broker (None: not measured yet)
    correction_s: float    # subtracted from the host clock (0: none)
    samples: int
    measured_at_ms: int


@dataclass(frozen=True)
class AgentStatus:
    user_id: str
    version: str
    nats_connected: bool
    nats_server: str
    terminal_connected: bool
    broker: str
    currency: str
    balance: float
    equity: float
    margin_free: float
    outbox_depth: int
    reconnects: int
    tier: str
    trading_symbols: tuple[str, ...]
    quotes: tuple[QuoteRow, ...] = ()
    positions: tuple[PositionRow, ...] = ()
    commands: tuple[CommandRow, ...] = ()
    indicators: tuple[IndicatorRow, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    server_time: ServerTime | None = None
    ready: bool = True
    not_ready: tuple[HealthRow, ...] = ()
    alive: bool = True
    wedged: tuple[HealthRow, ...] = ()
    catchup: CatchupRow | None = None
    commands_held: int = 0
    held_for: str = ""       # what held commands wait for ("" when none wait)
    clock: ClockRow | None = None
    risk: RiskState | None = None
    # The chart histories, streamed by /events; not part of the JSON status (too big to copy).
    charts: ChartHistory | None = field(default=None, repr=False, compare=False)


def as_json(status: AgentStatus) -> dict:
    return dataclasses.asdict(dataclasses.replace(status, charts=None)) | {"charts": None}


def build_app(status: Callable[[], AgentStatus], registry: CollectorRegistry, *,
              update_every_s: float = 1.0) -> web.Application:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text=status_page.render(status()), content_type="text/html")

    async def api(_: web.Request) -> web.Response:
        return web.json_response(as_json(status()))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def readyz(_: web.Request) -> web.Response:
        current = status()
        body = {"ready": current.ready, "reasons": [dataclasses.asdict(r) for r in current.not_ready + current.wedged]}
        return web.json_response(body, status=200 if current.ready else 503)

    async def healthz(_: web.Request) -> web.Response:
        current = status()
        body = {"alive": current.alive, "reasons": [dataclasses.asdict(r) for r in current.wedged],
                "nats": current.nats_connected, "terminal": current.terminal_connected}
        return web.json_response(body, status=200 if current.alive else 503)

    app = web.Application()
    app.add_routes([web.get("/", page), web.get("/api/status", api), web.get("/metrics", metrics),
                    web.get("/readyz", readyz), web.get("/healthz", healthz),
                    web.get("/events", status_events.handler(status, update_every_s)),
                    web.get("/static/{name}", status_events.static_file)])
    status_events.stop_on_shutdown(app)
    return app


def build_metrics_app(registry: CollectorRegistry) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics)])
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    # A page left open holds an event stream: stopping must not wait a minute for it.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (port 0 asks the OS for a free one)."""
    return runner.addresses[0][1]

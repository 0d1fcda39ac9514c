"""The agent's local HTTP endpoints: a status page for the trader, /api/status as JSON,
/metrics for Prometheus, /readyz and /healthz. Bound to localhost by default: it shows
account figures and positions, which are nobody else's business.

``/readyz`` answers 503 with the reasons while the agent does not do its job within its
budgets (no prices while the market is open, NATS or the terminal away, the outbox not
draining, the catch-up failing, the disk refusing writes); ``/healthz`` answers 503 only
when the agent is wedged beyond its own recovery (a stuck MT5 call, a stopped loop): a
supervisor restarts it then, and only then."""

from __future__ import annotations

import dataclasses
import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


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


@dataclass(frozen=True)
class IndicatorRow:
    symbol: str
    sma_20: float
    ema_12: float
    rsi: float
    macd_line: float
    session_open: bool


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


def build_app(status: Callable[[], AgentStatus], registry: CollectorRegistry) -> web.Application:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text=render(status()), content_type="text/html")

    async def api(_: web.Request) -> web.Response:
        return web.json_response(dataclasses.asdict(status()))

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
                    web.get("/readyz", readyz), web.get("/healthz", healthz)])
    return app


def build_metrics_app(registry: CollectorRegistry) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics)])
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (port 0 asks the OS for a free one)."""
    return runner.addresses[0][1]


# ------------------------------------------------------------------------ rendering

def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body or '<tr><td>none</td></tr>'}</tbody></table>"


def _state(ok: bool) -> str:
    return '<span class="ok">connected</span>' if ok else '<span class="bad">disconnected</span>'


def _server_time(t: ServerTime | None) -> str:
    if t is None:
        return "MT5 server time: not known yet"
    confirmed = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t.confirmed_at_ms / 1000)) \
        if t.confirmed_at_ms else "never"
    return (f"MT5 server time: {html.escape(t.label)}, last confirmed {confirmed}; "
            "every time shown and published is UTC")


def _health(s: AgentStatus) -> str:
    problems = s.wedged + s.not_ready
    if not problems:
        return '<span class="ok">ready</span>'
    items = "".join(f"<li><b>{html.escape(p.reason)}</b> for {p.for_s:.0f} s: {html.escape(p.detail)}</li>"
                    for p in problems)
    return f'<span class="bad">{"not alive" if s.wedged else "not ready"}</span><ul>{items}</ul>'


def _activity(s: AgentStatus) -> str:
    parts = []
    if s.commands_held:
        parts.append(f"{s.commands_held} command(s) wait for the {html.escape(s.held_for)}")
    if s.catchup is not None:
        c = s.catchup
        failing = f", failing for {c.failing_for_s:.0f} s: {html.escape(c.error)}" if c.state == "failing" else ""
        parts.append(f"catch-up {html.escape(c.state)} (attempt {c.attempts}){failing}")
    if s.clock is not None and s.clock.skew_s is not None:
        corrected = f", corrected by {s.clock.correction_s:+.1f} s" if s.clock.correction_s else ""
        parts.append(f"host clock {s.clock.skew_s:+.1f} s against the broker's{corrected}")
    return " &middot; ".join(parts)


def render(s: AgentStatus) -> str:
    quotes = _table(["symbol", "broker symbol", "bid", "ask", "spread (pts)", "age (s)"],
                    [[q.symbol, q.broker_symbol, q.bid, q.ask, q.spread_points, f"{q.age_s:.1f}"] for q in s.quotes])
    positions = _table(["ticket", "symbol", "side", "lots", "open", "SL", "TP", "P/L", "command"],
                       [[p.ticket, p.symbol, p.side, p.volume, p.price_open, p.sl, p.tp, f"{p.profit:.2f}",
                         p.command_id] for p in s.positions])
    commands = _table(["time", "command", "type", "symbol", "status", "fill", "slippage (pts)", "reason"],
                      [[time.strftime("%H:%M:%S", time.gmtime(c.at_ms / 1000)), c.command_id, c.type, c.symbol,
                        c.status, c.fill_price or "", c.slippage_points, c.reason] for c in s.commands])
    indicators = _table(["symbol", "SMA20", "EMA12", "RSI", "MACD", "market"],
                        [[i.symbol, i.sma_20, i.ema_12, f"{i.rsi:.1f}", i.macd_line,
                          "open" if i.session_open else "closed"] for i in s.indicators])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in s.notes)
    server_time = _server_time(s.server_time)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>mt5fleet agent: {html.escape(s.user_id)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}th{{background:#f3f3f3}}
.ok{{color:#070}}.bad{{color:#b00;font-weight:bold}}</style></head><body>
<h1>mt5fleet agent &middot; {html.escape(s.user_id)}</h1>
<p>NATS: {_state(s.nats_connected)} ({html.escape(s.nats_server)}), reconnects {s.reconnects}
&middot; MT5 terminal: {_state(s.terminal_connected)} ({html.escape(s.broker)})
&middot; outbox {s.outbox_depth} &middot; tier {html.escape(s.tier)} &middot; version {html.escape(s.version)}</p>
<p>{server_time}</p>
<div>Health: {_health(s)}</div><p>{_activity(s)}</p>
<h2>Account</h2><p>balance {s.balance:,.2f} {html.escape(s.currency)} &middot; equity {s.equity:,.2f}
&middot; free margin {s.margin_free:,.2f} &middot; trading {html.escape(", ".join(s.trading_symbols))}</p>
<h2>Prices</h2>{quotes}<h2>Positions</h2>{positions}<h2>Recent commands</h2>{commands}
<h2>Server indicators</h2>{indicators}<ul>{notes}</ul></body></html>"""

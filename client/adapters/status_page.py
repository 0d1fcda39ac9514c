"""The status page's HTML: the page shell and its sections, rendered here, on the agent.

The first GET carries every section, so the page reads without JavaScript; then
``/events`` sends the sections that changed, rendered by the same functions, and the
page swaps them in (``static/page.js``). One renderer, escaped in one place, instead of
a second one in JavaScript. The charts are the exception: JavaScript draws them (uPlot)
from the histories ``/events`` streams, and the tables below them carry the same figures
for a screen reader or a page without scripts.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mt5fleet.client.adapters.status import AgentStatus, CommandRow, ServerTime

SECTIONS = ("health", "risk", "account", "commands", "positions", "quotes", "indicators")


def esc(value: object) -> str:
    return html.escape(str(value))


def price(value: float) -> str:
    """A price as the broker quotes it (up to 6 significant digits); blank when absent."""
    return f"{value:.6g}" if value else ""


def _utc(ms: int, fmt: str = "%H:%M:%S") -> str:
    return time.strftime(fmt, time.gmtime(ms / 1000))


def _table(caption: str, headers: list[str], rows: list[str]) -> str:
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    empty = f'<tr><td colspan="{len(headers)}">none yet</td></tr>'
    return (f'<div class="scroll" tabindex="0" role="region" aria-label="{esc(caption)}"><table>'
            f'<caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows) or empty}</tbody></table></div>')


def _row(cells: list[object]) -> str:
    return "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"


def _state(ok: bool, good: str = "connected", bad: str = "disconnected") -> str:
    # Words as well as colour: the state must read without seeing colour.
    return f'<span class="ok">&#10003; {good}</span>' if ok else f'<span class="bad">&#10007; {bad}</span>'


# --------------------------------------------------------------------------- sections

def health(s: AgentStatus) -> str:
    problems = s.wedged + s.not_ready
    verdict = _state(not problems, "ready", "not alive" if s.wedged else "not ready")
    items = "".join(f"<li><b>{esc(p.reason)}</b> for {p.for_s:.0f} s: {esc(p.detail)}</li>" for p in problems)
    return f"""<h2 id="health-h">Connection health</h2>
<dl class="facts">
<dt>NATS server</dt><dd data-field="nats">{_state(s.nats_connected)} {esc(s.nats_server)}</dd>
<dt>Reconnects</dt><dd data-field="reconnects">{s.reconnects}</dd>
<dt>MT5 terminal</dt><dd data-field="terminal">{_state(s.terminal_connected)} {esc(s.broker)}</dd>
<dt>Outbox</dt><dd data-field="outbox">{s.outbox_depth} waiting</dd>
<dt>Server time</dt><dd data-field="server-time">{_server_time(s.server_time)}</dd>
<dt>Health:</dt><dd data-field="health">{verdict}{f'<ul>{items}</ul>' if items else ''}</dd>
</dl><p>{_activity(s)}</p>"""


def _server_time(t: ServerTime | None) -> str:
    if t is None:
        return "MT5 server time: not known yet"
    confirmed = _utc(t.confirmed_at_ms, "%Y-%m-%d %H:%M:%S UTC") if t.confirmed_at_ms else "never"
    return f"MT5 server time: {esc(t.label)}, last confirmed {confirmed}; every time shown and published is UTC"


def _activity(s: AgentStatus) -> str:
    parts = []
    if s.commands_held:
        parts.append(f"{s.commands_held} command(s) wait for the {esc(s.held_for)}")
    if s.catchup is not None:
        c = s.catchup
        failing = f", failing for {c.failing_for_s:.0f} s: {esc(c.error)}" if c.state == "failing" else ""
        parts.append(f"catch-up {esc(c.state)} (attempt {c.attempts}){failing}")
    if s.clock is not None and s.clock.skew_s is not None:
        corrected = f", corrected by {s.clock.correction_s:+.1f} s" if s.clock.correction_s else ""
        parts.append(f"host clock {s.clock.skew_s:+.1f} s against the broker's{corrected}")
    return " &middot; ".join(parts)


def risk(s: AgentStatus) -> str:
    r = s.risk
    if r is None:
        return '<h2 id="risk-h">Risk</h2><p>not known yet</p>'
    daily = (f"{r.daily_loss:,.2f} of {r.daily_loss_limit:,.2f} {esc(s.currency)}"
             if r.daily_loss_limit else f"{r.daily_loss:,.2f} {esc(s.currency)} (no limit)")
    dd = f"{r.drawdown:.2%} of at most {r.drawdown_limit:.0%}" if r.drawdown_limit else f"{r.drawdown:.2%} (no limit)"
    stop = (f'<span class="bad">stopped out until {_utc(r.stopped_until_ms, "%a %H:%M UTC")}</span>: '
            f"{esc(r.stop_out_reason)}" if r.stopped_out else "no")
    return f"""<h2 id="risk-h">Risk</h2>
<p data-field="risk-summary">{_state(r.new_positions, esc(r.summary), esc(r.summary))}</p>
<dl class="facts">
<dt>Daily loss</dt><dd>{daily} {_meter("daily loss used", r.daily_loss_used)}</dd>
<dt>Drawdown</dt><dd>{dd} {_meter("drawdown used", r.drawdown_used)}</dd>
<dt>Stop-out</dt><dd>{stop}</dd>
<dt>Close-only</dt><dd>{"yes" if r.close_only else "no"}</dd>
<dt>Paused</dt><dd>{"yes" if r.paused else "no"}</dd>
<dt>Market</dt><dd>{esc(r.market)} ({esc(r.market_detail)})</dd>
</dl>"""


def _meter(label: str, used: float | None) -> str:
    if used is None:
        return ""
    shown = min(max(used, 0.0), 1.0)
    return f'<meter aria-label="{label}" min="0" max="1" low="0.5" high="0.8" optimum="0" value="{shown:.3f}">' \
           f"{used:.0%}</meter> {used:.0%} used"


def account(s: AgentStatus) -> str:
    return f"""<h2 id="account-h">Account</h2>
<p>balance <b data-field="balance">{s.balance:,.2f}</b> {esc(s.currency)} &middot; equity
<b data-field="equity">{s.equity:,.2f}</b> &middot; free margin {s.margin_free:,.2f} &middot; tier {esc(s.tier)}
&middot; trading {esc(", ".join(s.trading_symbols)) or "nothing yet"}</p>"""


COMMAND_HEADERS = ["time (UTC)", "command", "symbol", "order", "status", "reference entry", "adjusted entry",
                   "adjustment", "lot and why", "fill", "slippage (pts)", "signal → fill", "reason"]


def commands(s: AgentStatus) -> str:
    rows = [_command_row(c) for c in s.commands]
    return ('<h2 id="commands-h">Recent commands</h2>'
            + _table("Recent commands: what the server sent, what the agent did", COMMAND_HEADERS, rows))


def _command_row(c: CommandRow) -> str:
    status = f'<span class="{"ok" if c.status in ("FILLED", "PARTIAL") else "bad"}">{esc(c.status)}</span>'
    lots = f"{c.lots:g}" if c.lots else ""
    filled = f" ({c.filled_volume:g} filled)" if c.filled_volume and c.filled_volume != c.lots else ""
    slippage = (f"{c.slippage_points:+.1f} vs adjusted, {c.slippage_reference_points:+.1f} vs reference"
                if c.fill_price else "")
    cells = [
        ("time", esc(_utc(c.at_ms))), ("command", f"<code>{esc(c.command_id)}</code>"), ("symbol", esc(c.symbol)),
        ("order", esc(f"{c.type} {c.order_type}".strip())), ("status", status),
        ("reference_entry", esc(price(c.reference_entry))), ("adjusted_entry", esc(price(c.adjusted_entry))),
        ("adjustment", f"{_signed(c.adjustment)}<br><small>{esc(c.adjustment_reason)}</small>"
         if c.adjustment_reason or c.adjustment else ""),
        ("lot", f"{esc(lots)}{esc(filled)}{_lot_why(c)}"),
        ("fill", esc(price(c.fill_price))), ("slippage", esc(slippage)),
        ("latency", f"{c.latency_ms} ms" if c.latency_ms is not None else ""), ("reason", esc(c.reason)),
    ]
    tds = "".join(f'<td data-field="{name}">{value}</td>' for name, value in cells)
    return f'<tr data-command-id="{esc(c.command_id)}">{tds}</tr>'


def _lot_why(c: CommandRow) -> str:
    """Why this lot: the server's sizing in its own words, then the agent's risk check on it.
    A worker older than the field sends no sizing reason: say so for an order that opens a
    position (a lot that came with no reason), and stay quiet on a close."""
    if c.sizing_reason:
        sizing = f'<small data-field="sizing-reason">{esc(c.sizing_reason)}</small>'
    elif c.lots and c.type == "OPEN_POSITION":
        sizing = '<small data-field="sizing-reason" class="muted">sizing: the server did not say why</small>'
    else:
        sizing = ""
    check = f'<small data-field="lot-check">agent check: {esc(c.lot_why)}</small>' if c.lot_why else ""
    return "".join(f"<br>{part}" for part in (sizing, check) if part)


def _signed(value: float) -> str:
    return f"{value:+.6g}" if value else "0"


def positions(s: AgentStatus) -> str:
    rows = [_row([p.ticket, p.symbol, p.side, p.volume, price(p.price_open), price(p.sl), price(p.tp),
                  f"{p.profit:,.2f}", p.command_id]) for p in s.positions]
    return '<h2 id="positions-h">Open positions</h2>' + _table(
        "Open positions", ["ticket", "symbol", "side", "lots", "open", "SL", "TP", "P/L", "command"], rows)


def quotes(s: AgentStatus) -> str:
    rows = [_row([q.symbol, q.broker_symbol, price(q.bid), price(q.ask), q.spread_points, f"{q.age_s:.1f}"])
            for q in s.quotes]
    return '<h2 id="quotes-h">Your broker\'s prices</h2>' + _table(
        "Latest quotes", ["symbol", "broker symbol", "bid", "ask", "spread (pts)", "age (s)"], rows)


def indicators(s: AgentStatus) -> str:
    rows = [_row([i.symbol, price(i.sma_20), price(i.sma_50), price(i.ema_12), price(i.ema_26),
                  f"{price(i.bollinger_lower)} – {price(i.bollinger_upper)}" if i.bollinger_upper else "",
                  f"{i.rsi:.1f}", f"{i.macd_line:.6f} / {i.macd_signal:.6f}", "open" if i.session_open else "closed"])
            for i in s.indicators]
    return '<h2 id="indicators-h">Server indicators</h2>' + _table(
        "The server's indicators (md.<symbol>)",
        ["symbol", "SMA20", "SMA50", "EMA12", "EMA26", "Bollinger 20/2", "RSI", "MACD / signal", "market"], rows)


RENDERERS = {"health": health, "risk": risk, "account": account, "commands": commands, "positions": positions,
             "quotes": quotes, "indicators": indicators}


def sections(s: AgentStatus) -> dict[str, str]:
    return {name: RENDERERS[name](s) for name in SECTIONS}


# --------------------------------------------------------------------------- the page

def _section(name: str, body: str) -> str:
    return f'<section id="{name}" aria-labelledby="{name}-h">{body}</section>'


def render(s: AgentStatus) -> str:
    parts = sections(s)
    notes = "".join(f"<li>{esc(n)}</li>" for n in s.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mt5fleet agent: {esc(s.user_id)}</title>
<link rel="stylesheet" href="/static/uPlot.min.css"><link rel="stylesheet" href="/static/page.css">
</head><body>
<a class="skip" href="#commands">Skip to recent commands</a>
<header><h1>mt5fleet agent &middot; {esc(s.user_id)}</h1>
<p>version {esc(s.version)} &middot; <span id="live" role="status" aria-live="polite">static view: live updates
need JavaScript</span></p>
<nav aria-label="Sections"><a href="#health">Health</a> <a href="#risk">Risk</a> <a href="#account">Account</a>
<a href="#charts">Charts</a> <a href="#commands">Commands</a> <a href="#positions">Positions</a>
<a href="#quotes">Prices</a> <a href="#indicators">Indicators</a></nav></header>
<main>
<div class="grid">{_section("health", parts["health"])}{_section("risk", parts["risk"])}</div>
{_section("account", parts["account"])}
<figure class="chart" id="equity-figure"><figcaption>Equity and balance ({esc(s.currency)})</figcaption>
<div id="equity-chart" role="img" aria-label="Equity and balance over time; the figures are in the Account section">
</div></figure>
<section id="charts" aria-labelledby="charts-h"><h2 id="charts-h">Prices and the server's indicators</h2>
<p class="hint">Your broker's bid and ask, the server's reference price with SMA/EMA and Bollinger bands;
below each, RSI and MACD. Triangles mark your fills (up: buy, down: sell). The same figures are in the tables
below.</p><div id="symbol-charts"></div></section>
{_section("commands", parts["commands"])}
{_section("positions", parts["positions"])}
{_section("quotes", parts["quotes"])}
{_section("indicators", parts["indicators"])}
<ul>{notes}</ul>
</main>
<script src="/static/uPlot.iife.min.js"></script><script src="/static/page.js"></script>
</body></html>"""

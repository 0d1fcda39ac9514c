"""What the demo shows: ``DemoStats`` (fed with the signals, commands and execution
reports seen on NATS, the adjustment workers' skips, and the operator's view) and pure
renderings of it: the rich live view, a plain progress line, and the final summary.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mt5fleet.client.core import mt5_constants
from mt5fleet.proto.domain.sessions import NEW_YORK
from mt5fleet.proto.v1 import commands_pb2, execution_pb2, signals_pb2

RETCODE_NAMES = {value: name.removeprefix("TRADE_RETCODE_").lower() for name, value in vars(mt5_constants).items()
                 if name.startswith("TRADE_RETCODE_")}
MAX_ROWS = 12              # per table: a large fleet says "... N more" below
MAX_AGENT_ENDPOINTS = 6
FILLED = (execution_pb2.EXECUTION_STATUS_FILLED, execution_pb2.EXECUTION_STATUS_PARTIAL)
ACTIONS = {commands_pb2.OPEN_POSITION: "open", commands_pb2.CLOSE_POSITION: "close",
           commands_pb2.MODIFY_POSITION: "modify", commands_pb2.CLOSE_ALL: "close all"}


@dataclass
class SignalRow:
    signal_id: str
    symbol: str
    side: str           # BUY, SELL, ...
    action: str         # open, close, close 50%
    reference: float    # reference entry (opens) or the reference price a close saw
    digits: int
    created_ms: int


@dataclass
class Outcome:
    """One user's answer to one signal: a command (and later its execution) or a skip."""
    user_id: str
    skip: str = ""
    command_id: str = ""
    kind: str = ""
    entry: float = 0.0
    adjustment_points: float = 0.0
    lot: float = 0.0
    reason: str = ""
    status: str = ""    # filled, rejected, ... once the report is in
    fill_price: float = 0.0
    slippage: float = 0.0
    refusal: str = ""


@dataclass(frozen=True)
class UserRow:
    """The operator's view of one TradingClient."""
    user_id: str
    tier: str
    broker: str
    phase: str
    compliant: bool
    compliance: str     # the TierCompliant condition's message
    agent: str          # the AgentConnected condition's reason


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str            # Prometheus /metrics (the nats-server: its monitoring JSON)
    status: str = ""    # an agent's status page


@dataclass
class DemoStats:
    users: int = 0
    duration_s: float = 0.0
    signals_per_minute: float = 0.0
    phase: str = "starting"
    elapsed_s: float = 0.0              # since the command started
    running_s: float = 0.0              # since the signal feed started
    market_ms: int = 0                  # the demo's market clock, now
    signals: list[SignalRow] = field(default_factory=list)
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)    # signal id -> answers
    by_command: dict[str, Outcome] = field(default_factory=dict)
    commands_per_user: Counter = field(default_factory=Counter)
    fills_per_user: Counter = field(default_factory=Counter)
    refused_per_user: Counter = field(default_factory=Counter)
    skips_per_user: Counter = field(default_factory=Counter)
    news_skips_per_user: Counter = field(default_factory=Counter)
    news_trading: dict[str, bool] = field(default_factory=dict)   # user -> allowNewsTrading
    news_event: str = ""                                          # the demo calendar's event
    refusals: Counter = field(default_factory=Counter)                 # agent/broker, by reason
    skips: Counter = field(default_factory=Counter)                    # adjustment workers, by reason
    fills: int = 0
    slippage: list[float] = field(default_factory=list)                # points, positive = worse
    to_received_ms: list[int] = field(default_factory=list)            # signal -> command received
    to_fill_ms: list[int] = field(default_factory=list)                # signal -> fill
    operator: list[UserRow] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    warnings: int = 0
    stop_warnings: int = 0
    last_warning: str = ""
    log_file: str = ""
    run_dir: str = ""

    # ------------------------------------------------------------------ feeding
    def on_signal(self, signal: signals_pb2.UniversalSignal, digits: int) -> None:
        if signal.signal_id in self.outcomes:
            return
        side = commands_pb2.OrderType.Name(signal.order_type)
        action = ACTIONS.get(signal.action, "?")
        if signal.action == commands_pb2.CLOSE_POSITION and signal.close_fraction:
            action = f"close {signal.close_fraction:.0%}"
        buy = signal.order_type in (commands_pb2.BUY, commands_pb2.BUY_LIMIT, commands_pb2.BUY_STOP)
        reference = signal.entry or (signal.reference_ask if buy else signal.reference_bid)
        self.signals.append(SignalRow(signal.signal_id, signal.symbol, side, action, reference, digits,
                                      signal.created_at))
        self.outcomes[signal.signal_id] = []

    def on_command(self, command: commands_pb2.TradingCommand, digits: int) -> None:
        if command.command_id in self.by_command:
            return
        outcome = Outcome(command.user_id, command_id=command.command_id, kind=ACTIONS.get(command.type, "?"),
                          entry=command.entry_price, lot=command.lot_size, reason=command.adjustment_reason,
                          adjustment_points=round(command.price_adjustment * 10**digits, 1))
        self.by_command[command.command_id] = outcome
        self.outcomes.setdefault(command.signal_id, []).append(outcome)
        self.commands_per_user[command.user_id] += 1

    def on_skip(self, signal_id: str, user_id: str, reason: str) -> None:
        self.outcomes.setdefault(signal_id, []).append(Outcome(user_id, skip=reason))
        self.skips[reason] += 1
        self.skips_per_user[user_id] += 1
        if reason == "news_window":
            self.news_skips_per_user[user_id] += 1

    def on_execution(self, report: execution_pb2.ExecutionReport) -> None:
        outcome = self.by_command.get(report.command_id)
        if outcome is None or outcome.status or report.status == execution_pb2.EXECUTION_STATUS_DUPLICATE:
            return  # another run's command, or a report seen already
        outcome.status = execution_pb2.ExecutionStatus.Name(report.status).removeprefix("EXECUTION_STATUS_").lower()
        if report.signal_created_at and report.received_at >= report.signal_created_at:
            self.to_received_ms.append(report.received_at - report.signal_created_at)
        if report.status in FILLED:
            self.fills += 1
            self.fills_per_user[report.user_id] += 1
            outcome.fill_price, outcome.slippage = report.fill_price, report.slippage_points
            self.slippage.append(report.slippage_points)
            if report.signal_created_at and report.executed_at >= report.signal_created_at:
                self.to_fill_ms.append(report.executed_at - report.signal_created_at)
            return
        outcome.refusal = report.reject_code or refusal_reason(report)
        self.refusals[outcome.refusal] += 1
        self.refused_per_user[report.user_id] += 1

    def on_warning(self, message: str) -> None:
        """Warnings while stopping are counted apart: closing connections say they closed."""
        if self.phase.startswith("stop"):
            self.stop_warnings += 1
            return
        self.warnings += 1
        self.last_warning = message

    # ------------------------------------------------------------------ figures
    @property
    def commands(self) -> int:
        return sum(self.commands_per_user.values())

    def latest_answered(self) -> SignalRow | None:
        """The newest signal that has at least one user's answer."""
        return next((s for s in reversed(self.signals) if self.outcomes.get(s.signal_id)), None)


def refusal_reason(report: execution_pb2.ExecutionReport) -> str:
    """A broker's answer by its retcode's name (``broker_requote``), else the status and
    the words that open the agent's reason, before any number or detail."""
    name = RETCODE_NAMES.get(report.retcode)
    if name:
        return f"broker_{name}"
    status = execution_pb2.ExecutionStatus.Name(report.status).removeprefix("EXECUTION_STATUS_").lower()
    words = re.split(r"[0-9:/(;]", report.reason, maxsplit=1)[0].strip()[:40]
    return f"{status}: {words}" if words else status


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0-100); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def latency_text(values: Sequence[float]) -> str:
    p50, p99 = percentile(values, 50), percentile(values, 99)
    if p50 is None:
        return "no data"
    return f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"


def by_reason(counts: Counter) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in counts.most_common()) or "none"


def slippage_text(values: Sequence[float]) -> str:
    if not values:
        return "no fills"
    worst = max(values)
    return f"mean {sum(values) / len(values):+.2f} points, worst {worst:+.1f}, best {min(values):+.1f}"


def market_time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, NEW_YORK).strftime("%a %Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------- plain text
def progress_line(stats: DemoStats) -> str:
    return (f"[{stats.elapsed_s:5.1f}s] {stats.phase}: signals {len(stats.signals)}, commands {stats.commands}, "
            f"fills {stats.fills}, refused {sum(stats.refusals.values())}, skipped {sum(stats.skips.values())}; "
            f"signal->fill {latency_text(stats.to_fill_ms)}")


def summary(stats: DemoStats, users: Sequence[str]) -> str:
    opens = sum(1 for s in stats.signals if s.action == "open")
    per_user = ", ".join(f"{user} {stats.commands_per_user.get(user, 0)} ({stats.fills_per_user.get(user, 0)} filled, "
                         f"{stats.refused_per_user.get(user, 0)} refused)" for user in users)
    lines = [
        f"mt5fleet demo summary: {stats.elapsed_s:.1f} s on the simulated market clock "
        f"(up to {market_time(stats.market_ms)} New York)",
        f"signals: {len(stats.signals)} ({opens} opens, {len(stats.signals) - opens} closes)",
        f"commands: {stats.commands}",
        f"commands per user: {per_user}",
        f"fills: {stats.fills}",
        f"rejections by reason: {by_reason(stats.refusals)}",
        f"skips by reason: {by_reason(stats.skips)}",
        *news_lines(stats, users),
        f"slippage vs the adjusted price: {slippage_text(stats.slippage)}",
        f"latency signal->command received: {latency_text(stats.to_received_ms)}",
        f"latency signal->fill: {latency_text(stats.to_fill_ms)}",
        f"warnings: {stats.warnings}" + (f" (last: {stats.last_warning})" if stats.warnings else "")
        + (f"; {stats.stop_warnings} more while stopping" if stats.stop_warnings else ""),
        f"logs: {stats.log_file}",
        f"run folder: {stats.run_dir}",
    ]
    example = audit_example(stats)
    if example is not None:
        lines.append(f"audit a decision: {example}")
    return "\n".join(lines)


def news_lines(stats: DemoStats, users: Sequence[str]) -> list[str]:
    """The news window: which users it skipped (news trading off) and which it did not."""
    if not stats.news_event:
        return []
    per_user = ", ".join(f"{user} {stats.news_skips_per_user.get(user, 0)} (news trading "
                         f"{'on' if stats.news_trading.get(user) else 'off'})" for user in users)
    return [f"news window: {stats.news_event}", f"news_window skips per user: {per_user}"]


def audit_example(stats: DemoStats) -> str | None:
    """``mt5fleet audit`` of the newest filled open of the run (else the newest command, else
    the newest skip), against the run's own store: it works once the demo has stopped."""
    answers = [(signal, outcome) for signal in reversed(stats.signals)
               for outcome in stats.outcomes.get(signal.signal_id, ())]
    for wanted in (lambda s, o: s.action == "open" and o.status == "filled", lambda s, o: o.command_id,
                   lambda s, o: o.skip):
        chosen = next(((s, o) for s, o in answers if wanted(s, o)), None)
        if chosen is not None:
            signal, outcome = chosen
            return (f"mt5fleet audit {shlex.quote(signal.signal_id)} --user {outcome.user_id} "
                    f"--demo-run {shlex.quote(stats.run_dir)}")
    return None


# ---------------------------------------------------------------------- rich
def render(stats: DemoStats) -> RenderableType:
    return Group(_header(stats), _signals_table(stats), _fanout_table(stats), _users_table(stats),
                 _outcomes_panel(stats), _endpoints_table(stats))


def _header(stats: DemoStats) -> Panel:
    clock = market_time(stats.market_ms) if stats.market_ms else "-"
    text = Text.assemble(
        ("mt5fleet demo", "bold"), f"  {stats.users} users, {stats.signals_per_minute:g} signals/min  ",
        (stats.phase, "bold green" if stats.phase == "running" else "bold yellow"),
        f"  {stats.running_s:.0f} of {stats.duration_s:.0f} s of signals   Ctrl-C stops\n",
        ("simulated market clock ", "dim"), (f"{clock} New York", "cyan"),
        ("  (the FX market is closed at weekends: the demo runs on a weekday morning at real-time speed)", "dim"))
    return Panel(text, box=box.ROUNDED)


def _signals_table(stats: DemoStats, rows: int = 5) -> Table:
    table = _table(f"signals: {len(stats.signals)} (the latest {rows})",
                   ("id", "time NY", "symbol", "action", "side", "ref. entry", "commands", "skips"),
                   right=("ref. entry", "commands", "skips"))
    for signal in stats.signals[-rows:]:
        answers = stats.outcomes.get(signal.signal_id, [])
        commands, skips = sum(1 for a in answers if a.command_id), sum(1 for a in answers if a.skip)
        table.add_row(signal.signal_id, market_time(signal.created_ms)[-8:], signal.symbol, signal.action,
                      signal.side, f"{signal.reference:.{signal.digits}f}", str(commands), str(skips))
    return table


def _table(title: str, columns: Sequence[str], *, right: Sequence[str] = (), wide: str = "",
           show_header: bool = True) -> Table:
    """Columns at their natural width, ``wide`` taking what is left (cut with an ellipsis)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", expand=True, show_header=show_header)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", no_wrap=True,
                         overflow="ellipsis", ratio=1 if column == wide else None)
    return table


def _more(table: Table, hidden: int) -> None:
    if hidden > 0:
        table.add_row(Text(f"... {hidden} more", "dim"))


def _fanout_table(stats: DemoStats) -> Table:
    signal = stats.latest_answered()
    title = f"per user: {signal.signal_id} {signal.action} {signal.side} {signal.symbol}" if signal else "per user"
    table = _table(title, ("user", "command", "entry", "adj. pts", "lot", "fill", "slip pts",
                           "adjustment / skip reason"), right=("entry", "adj. pts", "lot", "fill", "slip pts"),
                   wide="adjustment / skip reason")
    if signal is None:
        return table
    digits = signal.digits
    answers = sorted(stats.outcomes[signal.signal_id], key=lambda a: a.user_id)
    for answer in answers[:MAX_ROWS]:
        if answer.skip:
            table.add_row(answer.user_id, Text("skipped", "yellow"), "", "", "", "", "", Text(answer.skip, "yellow"))
            continue
        state = answer.status or "sent"
        style = "green" if state in ("filled", "partial") else ("red" if answer.refusal else "")
        fill = f"{answer.fill_price:.{digits}f}" if answer.fill_price else ""
        table.add_row(answer.user_id, Text(f"{answer.kind} {state}", style),
                      f"{answer.entry:.{digits}f}" if answer.entry else "",
                      f"{answer.adjustment_points:+.1f}" if answer.entry else "", _lots(answer), fill,
                      f"{answer.slippage:+.1f}" if answer.fill_price else "",
                      answer.refusal and Text(f"refused: {answer.refusal}", "red") or answer.reason)
    _more(table, len(answers) - MAX_ROWS)
    return table


def _lots(answer: Outcome) -> str:
    return "all" if answer.kind == "close" and not answer.lot else f"{answer.lot:g}"


def _users_table(stats: DemoStats) -> Table:
    table = _table("operator: TradingClients (tier, phase, agent heartbeat, TierCompliant condition)",
                   ("user", "tier", "broker", "phase", "agent", "cmds", "fills", "refused", "skips", "TierCompliant"),
                   right=("cmds", "fills", "refused", "skips"), wide="TierCompliant")
    for row in stats.operator[:MAX_ROWS]:
        phase_style = {"Ready": "green", "Degraded": "yellow"}.get(row.phase, "red")
        table.add_row(row.user_id, row.tier, row.broker, Text(row.phase, phase_style), row.agent,
                      str(stats.commands_per_user.get(row.user_id, 0)), str(stats.fills_per_user.get(row.user_id, 0)),
                      str(stats.refused_per_user.get(row.user_id, 0)), str(stats.skips_per_user.get(row.user_id, 0)),
                      Text(row.compliance, "" if row.compliant else "yellow"))
    _more(table, len(stats.operator) - MAX_ROWS)
    return table


def _outcomes_panel(stats: DemoStats) -> Panel:
    lines = [
        f"fills {stats.fills}   slippage vs adjusted price: {slippage_text(stats.slippage)}",
        f"refused by agent/broker: {by_reason(stats.refusals)}",
        f"skipped by adjustment workers: {by_reason(stats.skips)}",
        f"latency signal->command received: {latency_text(stats.to_received_ms)}   "
        f"signal->fill: {latency_text(stats.to_fill_ms)}",
        f"warnings: {stats.warnings}" + (f" (last: {stats.last_warning[:100]})" if stats.warnings else "")
        + f"   log: {stats.log_file}",
    ]
    return Panel("\n".join(lines), title="outcomes", title_align="left", box=box.ROUNDED)


def _endpoints_table(stats: DemoStats) -> Table:
    table = _table("Prometheus /metrics and agents' status pages", ("component", "metrics", "status page"))
    agents = [e for e in stats.endpoints if e.status]
    for endpoint in [e for e in stats.endpoints if not e.status] + agents[:MAX_AGENT_ENDPOINTS]:
        table.add_row(endpoint.name, endpoint.url, endpoint.status)
    _more(table, len(agents) - MAX_AGENT_ENDPOINTS)
    return table


def endpoints_text(endpoints: Sequence[Endpoint]) -> str:
    """Every endpoint, one a line (the run folder's endpoints.txt)."""
    return "".join(f"{e.name}: {e.url}" + (f"  status page {e.status}" if e.status else "") + "\n"
                   for e in endpoints)

"""Is the agent doing its job? The pure rules behind ``/readyz`` and ``/healthz``.

*Ready* means the agent does what it is there for: it publishes the broker's prices while
the market is open, it is connected to NATS and to the MT5 terminal, its outbox drains, its
catch-up succeeds and its data folder can be written. Each of these may fail for a moment
(a reconnect, a slow disk), so each has a budget: only a failure that lasts longer than its
budget makes the agent not ready, with a reason a dashboard can count (``Reason``).

*Alive* is narrower: the agent is wedged beyond its own recovery (its one MT5 thread has
been stuck in a call for longer than any terminal call can take, or one of its loops
stopped): restarting the process is the only fix. A NATS or terminal outage is never a
liveness failure: the agent reconnects by itself, and a restart would not help.

Pure: the caller measures how long each condition has held (``Facts``); nothing here reads
a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from mt5fleet.client.core.settings import rule_field


class Reason(enum.StrEnum):
    """Why the agent is not ready (or not alive): a label of ``mt5fleet_agent_not_ready``.

    The values are a contract with dashboards and alerts: never rename one."""

    PRICES_NOT_PUBLISHED = "prices_not_published"
    NATS_DISCONNECTED = "nats_disconnected"
    TERMINAL_DISCONNECTED = "terminal_disconnected"
    OUTBOX_NOT_DRAINING = "outbox_not_draining"
    CATCHUP_FAILING = "catchup_failing"
    STORAGE_UNWRITABLE = "storage_unwritable"
    # Liveness
    MT5_THREAD_STUCK = "mt5_thread_stuck"
    LOOP_STOPPED = "loop_stopped"


READINESS_REASONS = tuple(r for r in Reason if r not in (Reason.MT5_THREAD_STUCK, Reason.LOOP_STOPPED))


@dataclass(frozen=True)
class HealthBudgets:
    """How long (seconds) each failure may last before the agent says it is not ready.

    Defaults suit production: longer than a NATS reconnect, a terminal restart or a catch-up
    retry, shorter than a trader would want to find out. Tests pass small ones."""

    prices_s: float = rule_field(30.0, "positive")     # no price batch stored by JetStream while the market is open
    nats_s: float = rule_field(30.0, "positive")       # disconnected from every NATS server
    terminal_s: float = rule_field(30.0, "positive")   # the MT5 terminal does not answer
    outbox_s: float = rule_field(120.0, "positive")    # entries waiting and none stored for this long
    catchup_s: float = rule_field(60.0, "positive")    # the catch-up after a (re)connect keeps failing
    storage_s: float = rule_field(0.0, "cap")          # the data folder cannot be written: 0 stops trading at once
    mt5_call_s: float = rule_field(300.0, "positive")  # liveness: one MT5 call this long (initialize times out at 60)
    check_every_s: float = rule_field(1.0, "positive")  # how often the agent evaluates all of the above


@dataclass(frozen=True)
class Facts:
    """How long each failure has lasted so far (0: not failing), and what it says."""

    market_open: bool = True
    prices_quiet_s: float = 0.0     # since the last price batch JetStream stored (or the start)
    prices_error: str = ""
    nats_down_s: float = 0.0
    terminal_down_s: float = 0.0
    terminal_error: str = ""
    outbox_stalled_s: float = 0.0
    outbox_depth: int = 0
    catchup_failing_s: float = 0.0
    catchup_error: str = ""
    storage_failing_s: float = 0.0
    storage_error: str = ""
    mt5_busy_s: float = 0.0         # the MT5 call running now (0: idle)
    stopped_loops: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    reason: Reason
    detail: str


def readiness(facts: Facts, budgets: HealthBudgets) -> tuple[Problem, ...]:
    """Every reason the agent is not ready now; empty: ready."""
    found: list[Problem] = []

    def over(seconds: float, budget: float, reason: Reason, detail: str) -> None:
        # A zero budget still needs the failure to exist (seconds > 0 means it does).
        if seconds > 0 and seconds >= budget:
            found.append(Problem(reason, detail))

    if facts.market_open:
        over(facts.prices_quiet_s, budgets.prices_s, Reason.PRICES_NOT_PUBLISHED,
             _with(f"no price batch stored for {facts.prices_quiet_s:.0f} s while the market is open",
                   facts.prices_error))
    over(facts.nats_down_s, budgets.nats_s, Reason.NATS_DISCONNECTED,
         f"disconnected from NATS for {facts.nats_down_s:.0f} s; reports wait in the outbox")
    over(facts.terminal_down_s, budgets.terminal_s, Reason.TERMINAL_DISCONNECTED,
         _with(f"the MT5 terminal has not answered for {facts.terminal_down_s:.0f} s; commands wait",
               facts.terminal_error))
    over(facts.outbox_stalled_s, budgets.outbox_s, Reason.OUTBOX_NOT_DRAINING,
         f"{facts.outbox_depth} message(s) in the outbox and none stored for {facts.outbox_stalled_s:.0f} s")
    over(facts.catchup_failing_s, budgets.catchup_s, Reason.CATCHUP_FAILING,
         _with(f"the catch-up has failed for {facts.catchup_failing_s:.0f} s (still retrying)", facts.catchup_error))
    over(facts.storage_failing_s, budgets.storage_s, Reason.STORAGE_UNWRITABLE,
         _with("the data folder cannot be written: no new order is sent", facts.storage_error))
    return tuple(found)


def liveness(facts: Facts, budgets: HealthBudgets) -> tuple[Problem, ...]:
    """Every reason the agent is wedged beyond its own recovery; empty: alive."""
    found = []
    if facts.mt5_busy_s >= budgets.mt5_call_s:
        found.append(Problem(Reason.MT5_THREAD_STUCK, f"one MT5 call has been running for {facts.mt5_busy_s:.0f} s"))
    if facts.stopped_loops:
        found.append(Problem(Reason.LOOP_STOPPED, f"stopped: {', '.join(facts.stopped_loops)}"))
    return tuple(found)


def _with(text: str, error: str) -> str:
    return f"{text} ({error})" if error else text


class Transitions:
    """Which problems began and which ended since the last look, so that each is logged
    and counted once per transition, not once per evaluation."""

    def __init__(self) -> None:
        self.current: dict[Reason, Problem] = {}

    def update(self, problems: Iterable[Problem]) -> tuple[list[Problem], list[Reason]]:
        now = {p.reason: p for p in problems}
        began = [p for reason, p in now.items() if reason not in self.current]
        ended = [reason for reason in self.current if reason not in now]
        self.current = now
        return began, ended

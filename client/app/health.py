"""The agent's health, evaluated on a timer (not on probe requests, so that a change is
logged and counted when it happens even when nobody probes): the facts are read from what
the agent already holds, judged by ``core.health``, and each problem is logged and counted
once when it begins and once when it ends. ``/readyz`` and ``/healthz`` read the result."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.client.core.health import (
    READINESS_REASONS,
    Facts,
    HealthBudgets,
    Problem,
    Reason,
    Transitions,
    liveness,
    readiness,
)
from mt5fleet.proto.domain.clock import now_ms
from mt5fleet.proto.domain.sessions import is_market_open

if TYPE_CHECKING:
    from mt5fleet.client.app.agent import Agent

log = logging.getLogger("mt5fleet.agent.health")


@dataclass(frozen=True)
class Finding:
    reason: str
    detail: str
    for_s: float   # since the problem began (as the agent judged it)


class Lasting:
    """How long each condition has held, from the first look that saw it (monotonic)."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def __call__(self, key: str, failing: bool, now: float) -> float:
        if not failing:
            self._since.pop(key, None)
            return 0.0
        return max(now - self._since.setdefault(key, now), 1e-3)


class HealthMonitor:
    def __init__(self, *, budgets: HealthBudgets, metrics: AgentMetrics, facts: Callable[[float], Facts],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.budgets, self.metrics, self._facts, self._monotonic = budgets, metrics, facts, monotonic
        self._transitions = Transitions()
        self._began: dict[Reason, float] = {}
        self.not_ready: tuple[Problem, ...] = ()
        self.wedged: tuple[Problem, ...] = ()
        for reason in Reason:  # every series present from the start, at 0
            metrics.not_ready.labels(reason.value).set(0)
        metrics.ready.set(0)
        metrics.alive.set(1)

    @property
    def ready(self) -> bool:
        return not self.not_ready and not self.wedged

    @property
    def alive(self) -> bool:
        return not self.wedged

    def findings(self, problems: tuple[Problem, ...]) -> tuple[Finding, ...]:
        now = self._monotonic()
        return tuple(Finding(p.reason.value, p.detail, now - self._began.get(p.reason, now)) for p in problems)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.check()
            await asyncio.sleep(self.budgets.check_every_s)

    def check(self) -> None:
        now = self._monotonic()
        facts = self._facts(now)
        self.not_ready, self.wedged = readiness(facts, self.budgets), liveness(facts, self.budgets)
        began, ended = self._transitions.update(self.not_ready + self.wedged)
        for problem in began:
            self._began[problem.reason] = now
            self.metrics.not_ready.labels(problem.reason.value).set(1)
            self.metrics.not_ready_transitions.labels(problem.reason.value).inc()
            wedged = problem.reason not in READINESS_REASONS
            log.log(logging.ERROR if wedged else logging.WARNING, "%s: %s (%s)",
                    "not alive" if wedged else "not ready", problem.reason.value, problem.detail)
        for reason in ended:
            log.info("%s cleared after %.0f s", reason.value, now - self._began.pop(reason, now))
            self.metrics.not_ready.labels(reason.value).set(0)
        self.metrics.ready.set(1 if self.ready else 0)
        self.metrics.alive.set(1 if self.alive else 0)


def agent_facts(agent: Agent, now: float, lasting: Lasting) -> Facts:
    """What the agent holds, as the durations ``core.health`` judges."""
    nats = agent.nc
    terminal = agent.terminal
    stores = (agent.outbox.write_health, agent.ledger.write_health)
    storage_error = next((h.error for h in stores if h.failing_since is not None), "")
    return Facts(
        market_open=is_market_open(now_ms(agent.clock)),
        prices_quiet_s=max(now - agent.streams.prices_stored_at, 0.0),
        prices_error=agent.publisher.last_error.get("prices", "") or terminal.last_error,
        nats_down_s=lasting("nats", not (nats is not None and nats.is_connected), now),
        terminal_down_s=lasting("terminal", not terminal.connected, now),
        terminal_error=terminal.last_error,
        outbox_stalled_s=agent.publisher.stalled_for(now),
        outbox_depth=agent.outbox.depth(),
        catchup_failing_s=agent.catchup.failing_for(now),
        catchup_error=agent.catchup.status(now).error,
        storage_failing_s=max(h.failing_for(now) for h in stores),
        storage_error=storage_error,
        mt5_busy_s=agent.mt5.busy_for(now),
        stopped_loops=agent.stopped_loops(),
    )

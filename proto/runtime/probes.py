"""The HTTP endpoints every cluster process serves: ``/metrics`` for Prometheus,
``/healthz`` (liveness) and ``/readyz`` (readiness) for Kubernetes probes.

Readiness tells the truth about the process's work, not only about its connection: a
``Health`` holds named checks, each a function that returns None while the process does
its job and one line saying why not once it has failed for longer than its budget (no
lease renewed, no prices seen, no tick published, catch-up requests failing). ``/readyz``
answers 503 with every failing check's reason in the body; the ``mt5fleet_worker_ready``
gauge (label ``check``), the ``mt5fleet_worker_unready_total`` counter and one log line
say the same, once per transition.

Liveness stays "the event loop answers", except for a process wedged beyond recovery: a
check failing for longer than its ``wedged_after_s`` while NATS is connected (a follower
that cannot re-create its consumer for minutes) makes ``/healthz`` fail too, so Kubernetes
restarts it. Time spent disconnected does not count towards it: a restart cannot bring
NATS back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

log = logging.getLogger("mt5fleet.health")

# None while the process does its job; otherwise why not, in one line.
Check = Callable[[], str | None]


@dataclass(frozen=True)
class Verdict:
    connected: bool
    failing: dict[str, str]          # check -> why it fails
    wedged: dict[str, str]           # check -> why the process cannot recover

    @property
    def ready(self) -> bool:
        return self.connected and not self.failing

    @property
    def alive(self) -> bool:
        return not self.wedged


@dataclass
class _Entry:
    check: Check
    wedged_after_s: float | None
    failing_since: float | None = None     # connected time only, for the wedge budget
    reason: str | None = None


@dataclass
class Health:
    """Named readiness checks of one process; see the module docstring."""

    registry: CollectorRegistry | None = None
    connected: Callable[[], bool] = lambda: True
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, _Entry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.registry = registry = self.registry or CollectorRegistry()
        self.ready_gauge = Gauge("mt5fleet_worker_ready", "1 while the check passes, 0 while it fails (with "
                                 "/readyz saying why)", ["check"], registry=registry)
        self.unready = Counter("mt5fleet_worker_unready_total", "Times a check turned from passing to failing",
                               ["check"], registry=registry)

    def add(self, name: str, check: Check, *, wedged_after_s: float | None = None) -> None:
        """``wedged_after_s``: failing this long while connected means only a restart helps."""
        self._entries[name] = _Entry(check, wedged_after_s)
        self.ready_gauge.labels(name).set(1)
        self.unready.labels(name)

    def evaluate(self) -> Verdict:
        connected, now = self.connected(), self.clock()
        failing, wedged = {}, {}
        for name, entry in self._entries.items():
            reason = _run(name, entry.check)
            self._transition(name, entry, reason)
            if reason is None:
                entry.failing_since = None
                continue
            failing[name] = reason
            if not connected:
                entry.failing_since = None
            elif entry.failing_since is None:
                entry.failing_since = now
            if entry.wedged_after_s is not None and entry.failing_since is not None \
                    and now - entry.failing_since > entry.wedged_after_s:
                wedged[name] = f"{reason} (for more than {entry.wedged_after_s:.0f} s: restart)"
        return Verdict(connected, failing, wedged)

    async def watch(self, every_s: float = 1.0) -> None:
        """Evaluates forever, so transitions are logged and counted even when nobody probes."""
        while True:
            self.evaluate()
            await asyncio.sleep(every_s)

    def _transition(self, name: str, entry: _Entry, reason: str | None) -> None:
        if (reason is None) == (entry.reason is None):
            entry.reason = reason
            return
        if reason is None:
            log.info("ready again: %s", name)
            self.ready_gauge.labels(name).set(1)
        else:
            log.warning("not ready: %s: %s", name, reason)
            self.ready_gauge.labels(name).set(0)
            self.unready.labels(name).inc()
        entry.reason = reason


def _run(name: str, check: Check) -> str | None:
    try:
        return check()
    except Exception as exc:  # a broken check must say so, not take the probe down
        return f"check {name} failed: {exc!r}"


def probe_app(registry: CollectorRegistry, nc: Any, health: Health | None = None) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        if health is None:
            return web.json_response({"alive": True})
        verdict = health.evaluate()
        return web.json_response({"alive": verdict.alive, "wedged": verdict.wedged},
                                 status=200 if verdict.alive else 503)

    async def readyz(_: web.Request) -> web.Response:
        if health is None:
            return web.json_response({"nats": nc.is_connected}, status=200 if nc.is_connected else 503)
        verdict = health.evaluate()
        body = {"ready": verdict.ready, "nats": nc.is_connected, "failing": verdict.failing}
        return web.json_response(body, status=200 if verdict.ready else 503)

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return app

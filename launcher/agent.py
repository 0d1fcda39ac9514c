"""``mt5fleet agent``: build the agent from its config file and run it until SIGTERM/Ctrl-C.

The MT5 backend is chosen here, once: the real ``MetaTrader5`` package or a simulated
terminal. Nothing past this point knows which one it got. This composition root is also
the only place that knows the simulated terminal's broker presets, so it checks
``simulated.broker`` before starting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from mt5fleet.client.adapters.config_file import load_settings
from mt5fleet.client.adapters.settings import AgentSettings
from mt5fleet.client.adapters.status import AgentStatus, build_app, build_metrics_app, serve
from mt5fleet.client.adapters.terminal import load_metatrader5
from mt5fleet.client.app.agent import Agent
from mt5fleet.client.app.log_context import tag_handlers
from mt5fleet.client.app.status_view import agent_status
from mt5fleet.client.core.settings import Backend, ConfigError
from mt5fleet.proto.domain.clock import AcceleratedClock, Clock, SystemClock

log = logging.getLogger("mt5fleet.agent")


def check_simulated_broker(settings: AgentSettings) -> None:
    """A typo in ``simulated.broker`` fails here, listing the presets, not at terminal start."""
    if settings.mt5.backend is not Backend.SIMULATED:
        return
    from mt5fleet.client.sim.broker import BROKERS

    if settings.simulated.broker not in BROKERS:
        raise ConfigError("simulated.broker", f"{settings.simulated.broker!r} is not one of {', '.join(BROKERS)}")


def build_terminal_api(settings: AgentSettings, clock: Clock) -> Any:
    if settings.mt5.backend is Backend.METATRADER5:
        return load_metatrader5()
    check_simulated_broker(settings)
    from mt5fleet.client.sim.broker import BROKERS
    from mt5fleet.client.sim.feed import ReferenceFeed
    from mt5fleet.client.sim.terminal import SimulatedMetaTrader5

    sim = settings.simulated
    return SimulatedMetaTrader5(BROKERS[sim.broker], ReferenceFeed(seed=sim.seed), clock=clock.now, seed=sim.seed)


def build_clock(settings: AgentSettings) -> Clock:
    factor = settings.simulated.time_acceleration
    if settings.mt5.backend is Backend.SIMULATED and factor != 1.0:
        import time

        return AcceleratedClock(time.time(), factor)
    return SystemClock()


async def run_agent(settings: AgentSettings, *, ready: asyncio.Event | None = None) -> None:
    clock = build_clock(settings)
    agent = Agent(settings, build_terminal_api(settings, clock), clock=clock)
    await agent.start()
    runners = []

    def status() -> AgentStatus:
        return agent_status(agent)

    if settings.status.enabled:
        app = build_app(status, agent.metrics.registry)
        runners.append(await serve(app, settings.status.host, settings.status.port))
        log.info("status page on http://%s:%d/", settings.status.host, settings.status.port)
    if settings.metrics.enabled:
        runners.append(await serve(build_metrics_app(agent.metrics.registry), settings.metrics.host,
                                   settings.metrics.port))
        log.info("metrics on http://%s:%d/metrics", settings.metrics.host, settings.metrics.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C arrives as KeyboardInterrupt
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("stopping: draining the outbox")
        for runner in runners:
            await runner.cleanup()
        await agent.stop()


def main(config_path: str) -> int:
    settings = load_settings(config_path)
    check_simulated_broker(settings)
    logging.basicConfig(level=settings.log_level)
    tag_handlers(*logging.getLogger().handlers)
    asyncio.run(run_agent(settings))
    return 0

"""A real agent, a simulated MT5 terminal and a real nats-server, for the agent's tests."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

from waiting import wait_for

from mt5fleet.client.adapters.config_file import parse_settings
from mt5fleet.client.adapters.settings import AgentSettings
from mt5fleet.client.app.agent import Agent
from mt5fleet.client.core.health import HealthBudgets
from mt5fleet.client.core.mt5_constants import DEAL_ENTRY_IN
from mt5fleet.client.sim.broker import BROKERS
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.client.sim.terminal import SimulatedMetaTrader5
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import AcceleratedClock
from mt5fleet.proto.runtime import bootstrap, natsconn
from mt5fleet.proto.v1 import account_pb2, commands_pb2, execution_pb2
from mt5fleet.workers.app.catchup_service import CatchupService

# Wednesday 18 November 2026, 10:00 in New York: the FX market is open and far from rollover.
WEDNESDAY_MORNING = dt.datetime(2026, 11, 18, 15, 0, tzinfo=dt.UTC).timestamp()
SATURDAY = dt.datetime(2026, 11, 21, 15, 0, tzinfo=dt.UTC).timestamp()

_ids = itertools.count(1)


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def settings_for(tmp_path: Path, nats_url: str, user_id: str = "alice", **overrides: Any) -> AgentSettings:
    return parse_settings(raw_settings(tmp_path, nats_url, user_id, **overrides))


def raw_settings(tmp_path: Path, nats_url: str, user_id: str = "alice", **overrides: Any) -> dict:
    """The agent's settings as its TOML file would hold them (a child process parses them too)."""
    raw = {
        "user_id": user_id,
        "data_dir": str(tmp_path / f"agent-{user_id}"),
        "nats": {"servers": [nats_url], "reconnect_wait_s": 0.2, "connect_timeout_s": 2},
        "mt5": {"backend": "simulated"},
        "simulated": {"broker": "icm-raw", "seed": 7},
        "symbols": {"trading": ["EURUSD", "GBPUSD"], "monitoring": ["USDJPY"]},
        "intervals": {"prices_s": 0.2, "account_s": 1, "heartbeat_s": 0.5, "symbols_refresh_s": 30},
        "metrics": {"port": 0},
        "status": {"port": 0},
        "risk": {"max_risk_per_trade_pct": 5.0, "max_open_positions": 5, "max_drawdown": 0.5},
    }
    return merge(raw, overrides)


# Budgets short enough for a test to see the agent become not ready, and ready again.
QUICK_HEALTH = HealthBudgets(prices_s=1.0, nats_s=1.0, terminal_s=0.5, outbox_s=2.0, catchup_s=1.0, storage_s=0.0,
                             mt5_call_s=2.0, check_every_s=0.1)


class SkewedClock:
    """A host clock ``offset_s`` off the true one (the broker's and the platform's): the
    agent runs on it while the simulated terminal and the test keep the true time."""

    def __init__(self, true_clock: Any, offset_s: float) -> None:
        self.true_clock, self.offset_s = true_clock, offset_s

    def now(self) -> float:
        return self.true_clock.now() + self.offset_s

    async def sleep(self, seconds: float) -> None:
        await self.true_clock.sleep(seconds)


class AgentHarness:
    """``async with AgentHarness(server, tmp_path) as h:`` a started agent, the catch-up
    service it reads missed commands from, and a test client that sees every execution
    report the agent publishes."""

    def __init__(self, server: Any, tmp_path: Path, *, start: float = WEDNESDAY_MORNING, sim: Any = None,
                 clock: Any = None, host_clock_offset_s: float = 0.0, health: HealthBudgets | None = None,
                 start_agent: bool = True, **overrides: Any) -> None:
        self.server = server
        self.raw_settings = raw_settings(tmp_path, server.url, **overrides)
        self.settings = parse_settings(self.raw_settings)
        self.clock = clock or AcceleratedClock(start, 1.0)
        # The agent's host clock: the true one unless a test skews it.
        self.agent_clock = SkewedClock(self.clock, host_clock_offset_s) if host_clock_offset_s else self.clock
        self.health = health
        self._start_agent = start_agent
        # No random rejections or requotes unless a test asks for them: outcomes stay exact.
        broker = BROKERS[self.settings.simulated.broker].evolve(reject_probability=0.0, requote_probability=0.0)
        self.sim = sim or SimulatedMetaTrader5(broker, ReferenceFeed(seed=7), clock=self.clock.now, seed=7)
        self.user_id = self.settings.user_id
        self.reports: list[execution_pb2.ExecutionReport] = []
        self.agent: Agent | None = None
        self.catchup: CatchupService | None = None

    async def __aenter__(self) -> AgentHarness:
        self.nc = await natsconn.connect(natsconn.NatsSettings(
            servers=(self.server.url,), tls_ca=self.settings.nats.tls_ca, name="test-client"))
        self.js = self.nc.jetstream()
        await bootstrap.bootstrap(self.js, subjects.build_layout())
        await self.nc.subscribe(subjects.user_subject(self.user_id, subjects.Channel.EXECUTIONS),
                                cb=self._on_report)
        await self.start_catchup_service()
        if self._start_agent:
            await self.start_agent()
        return self

    async def __aexit__(self, *_: Any) -> None:
        if self.agent is not None:
            await self.agent.stop()
        if self.catchup is not None:
            await self.catchup.stop()
        await self.nc.close()

    async def start_catchup_service(self) -> CatchupService:
        """The platform's catch-up service, on the test client's connection."""
        self.catchup = CatchupService(self.nc)
        await self.catchup.start()
        return self.catchup

    async def start_agent(self) -> Agent:
        self.agent = Agent(self.settings, self.sim, clock=self.agent_clock, health=self.health)
        await self.agent.start()
        await wait_for(lambda: self.agent.nc is not None and self.agent.nc.is_connected, "agent connected")
        await wait_for(lambda: len(self.agent.executor.symbol_map) >= 3, "symbols mapped")
        return self.agent

    async def _on_report(self, message: Any) -> None:
        self.reports.append(execution_pb2.ExecutionReport.FromString(message.data))

    # ------------------------------------------------------------------ commands
    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def quote(self, canonical: str = "EURUSD") -> Any:
        tick = self.sim.symbol_info_tick(canonical + self.sim.broker.suffix)
        if tick is None:  # the agent shut its terminal connection down: look as a trader would
            self.sim.initialize()
            tick = self.sim.symbol_info_tick(canonical + self.sim.broker.suffix)
        return tick

    def command(self, **fields: Any) -> commands_pb2.TradingCommand:
        """A valid market BUY of 0.10 EURUSD at the user's current ask, SL/TP 50/100 pips away."""
        now = self.now_ms()
        symbol = fields.get("symbol", "EURUSD")
        buy = fields.get("order_type", commands_pb2.BUY) in (commands_pb2.BUY, commands_pb2.BUY_LIMIT,
                                                             commands_pb2.BUY_STOP)
        tick = self.quote(symbol) if symbol else None
        entry = (tick.ask if buy else tick.bid) if tick else 0.0
        pip = 0.01 if "JPY" in symbol else 0.0001
        defaults = dict(
            command_id=f"cmd-{next(_ids)}-{self.user_id}", user_id=self.user_id, type=commands_pb2.OPEN_POSITION,
            symbol=symbol, order_type=commands_pb2.BUY, lot_size=0.1, entry_price=entry,
            stop_loss=round(entry - 50 * pip if buy else entry + 50 * pip, 5),
            take_profit=round(entry + 100 * pip if buy else entry - 100 * pip, 5),
            expires_at=now + 60_000, created_at=now - 20, signal_id="sig-1", signal_created_at=now - 50,
            original_entry=entry, reference_price=entry, max_deviation_points=30)
        defaults.update(fields)
        return commands_pb2.TradingCommand(**defaults)

    async def send(self, command: commands_pb2.TradingCommand | bytes, msg_id: str | None = None) -> None:
        payload = command if isinstance(command, bytes) else command.SerializeToString()
        headers = {"Nats-Msg-Id": msg_id or (command.command_id if not isinstance(command, bytes) else "raw")}
        await self.js.publish(subjects.user_subject(self.user_id, subjects.Channel.COMMANDS), payload,
                              headers=headers)

    async def report(self, command_id: str, timeout: float = 10.0) -> execution_pb2.ExecutionReport:
        await wait_for(lambda: any(r.command_id == command_id for r in self.reports), f"report of {command_id}",
                       timeout)
        return next(r for r in self.reports if r.command_id == command_id)

    async def rebootstrap(self) -> None:
        """After a NATS restart: what the operator's drift repair recreates (memory streams
        such as TC_PRICES do not survive a restart of a single server)."""
        await wait_for(lambda: self.nc.is_connected, "the test client reconnected", timeout=30)
        await bootstrap.bootstrap(self.js, subjects.build_layout())

    async def stored_report_counts(self) -> Counter[str]:
        """How many reports JetStream holds per command id."""
        return Counter(r.command_id for r in await self.stored_reports())

    async def stored_account_sequences(self) -> dict[str, list[int]]:
        """The account updates JetStream holds: their sequences, per run of the agent (session)."""
        runs: dict[str, list[int]] = {}
        for message in await stream_messages(self.js, subjects.ACCOUNT_STREAM,
                                             subjects.user_subject(self.user_id, subjects.Channel.ACCOUNT), raw=True):
            session = message.headers["Nats-Msg-Id"].split(":", 1)[0]
            runs.setdefault(session, []).append(account_pb2.AccountProfile.FromString(message.data).sequence)
        return runs

    async def stored_reports(self) -> list[execution_pb2.ExecutionReport]:
        """Every report JetStream holds for this user, in stream order."""
        return [execution_pb2.ExecutionReport.FromString(m) for m in
                await stream_messages(self.js, subjects.EXECUTIONS_STREAM,
                                      subjects.user_subject(self.user_id, subjects.Channel.EXECUTIONS))]


async def stream_messages(js: Any, stream: str, subject: str, *, raw: bool = False) -> list[Any]:
    """All stored messages of one subject, oldest first (an ordered consumer read to the end):
    their payloads, or with ``raw`` the messages (headers too)."""
    info = await js.stream_info(stream, subjects_filter=subject)
    count = (info.state.subjects or {}).get(subject, 0)
    if not count:
        return []
    subscription = await js.subscribe(subject, ordered_consumer=True, deliver_policy=None)
    out = []
    try:
        while len(out) < count:
            message = await subscription.next_msg(timeout=5)
            out.append(message if raw else message.data)
    finally:
        await subscription.unsubscribe()
    return out


def open_positions(sim: Any) -> tuple:
    return tuple(sim.positions_get() or ())


def opening_deals(sim: Any) -> Counter[int]:
    """How many opening deals the terminal's history holds per magic (one per executed command id)."""
    deals = sim.history_deals_get(0, 4_000_000_000)
    if deals is None:  # the agent shut its terminal connection down: look as a trader would
        sim.initialize()
        deals = sim.history_deals_get(0, 4_000_000_000)
    return Counter(d.magic for d in deals or () if d.entry == DEAL_ENTRY_IN and d.magic)

"""The demo's agents: one real client agent per provisioned user, on a simulated terminal of the
user's broker, with the credentials the operator issued into the user's bootstrap Secret."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from mt5fleet.client.adapters.config_file import parse_settings
from mt5fleet.client.adapters.settings import AgentSettings
from mt5fleet.client.adapters.status import bound_port, build_app, build_metrics_app, serve
from mt5fleet.client.app.agent import Agent
from mt5fleet.client.app.status_view import agent_status
from mt5fleet.client.sim.broker import BROKERS
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.client.sim.terminal import SimulatedMetaTrader5
from mt5fleet.launcher.demo.services import LOCALHOST, OperatorHandle, RunPaths, quietly
from mt5fleet.launcher.demo.users import broker_preset
from mt5fleet.launcher.demo.view import Endpoint
from mt5fleet.operator.adapters.appliers import AGENT_KEY_KEY, CA_KEY, CREDS_KEY, bootstrap_secret_name
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.core.models import EffectiveSymbols, TradingClient
from mt5fleet.proto.domain.clock import AcceleratedClock
from mt5fleet.proto.runtime import sealing as credentials

log = logging.getLogger("mt5fleet.demo")


# ---------------------------------------------------------------------- agents
@dataclass(frozen=True)
class DemoUser:
    user_id: str
    tier: str
    preset: str
    login: int
    server: str
    password: str
    symbols: EffectiveSymbols      # what the operator granted: the agent's symbols until its config arrives


async def demo_users(clients: Iterable[TradingClient], handle: OperatorHandle) -> list[DemoUser]:
    """Each TradingClient with its broker preset, the password its Secret holds and the
    symbols the operator made effective."""
    effective = {t.user_id: t.status.effective_symbols for t in handle.local.tracked.values()}
    users = []
    for client in clients:
        spec = client.spec
        ref = spec.account.password_secret_ref
        stored = await handle.secrets.get(ref.name) or {}
        if ref.key not in stored:
            raise LookupError(f"Secret {ref.name} has no key {ref.key!r} (the MT5 password of {spec.user_id})")
        users.append(DemoUser(spec.user_id, spec.tier, broker_preset(spec.broker.server), spec.account.login,
                              spec.broker.server, stored[ref.key].decode(),
                              effective.get(spec.user_id, EffectiveSymbols())))
    return users


def agent_settings(user: DemoUser, paths: RunPaths, secrets: DirectorySecretStore,
                   servers: tuple[str, ...], seed: int) -> AgentSettings:
    """As an agent's TOML would say, with its bootstrap Secret's credentials, CA and key."""
    secret = bootstrap_secret_name(user.user_id)
    key_file = secrets.path(secret, AGENT_KEY_KEY)
    sealed = credentials.seal(user.password, credentials.load_key(key_file), login=user.login, server=user.server)
    return parse_settings({
        "user_id": user.user_id,
        "data_dir": str(paths.agent_dir(user.user_id)),
        "log_level": "INFO",
        "nats": {"servers": list(servers), "creds_file": str(secrets.path(secret, CREDS_KEY)),
                 "tls_ca": str(secrets.path(secret, CA_KEY)), "reconnect_wait_s": 0.5, "connect_timeout_s": 3},
        "mt5": {"backend": "simulated", "login": user.login, "server": user.server,
                "password": credentials.to_text(sealed), "key_file": str(key_file)},
        "simulated": {"broker": user.preset, "seed": seed},
        "symbols": {"trading": list(user.symbols.trading), "monitoring": list(user.symbols.monitoring)},
        "intervals": {"prices_s": 0.5, "account_s": 5, "heartbeat_s": 2, "symbols_refresh_s": 60},
        "metrics": {"port": 0},
        "status": {"port": 0},
        "risk": {"max_risk_per_trade_pct": 5.0},
    })


async def start_agent(stack: AsyncExitStack, user: DemoUser, settings: AgentSettings, feed: ReferenceFeed,
                      clock: AcceleratedClock, seed: int) -> Endpoint:
    """The real agent with a simulated terminal of the user's broker and account; its status
    page and /metrics on local ports."""
    broker = BROKERS[user.preset].evolve(login=user.login, password=user.password)
    terminal = SimulatedMetaTrader5(broker, feed, clock=clock.now, seed=seed)
    agent = Agent(settings, terminal, clock=clock)
    stack.push_async_callback(quietly, f"agent {user.user_id}", agent.stop, 10)
    await agent.start()
    status = await serve(build_app(lambda: agent_status(agent), agent.metrics.registry), LOCALHOST, 0)
    stack.push_async_callback(status.cleanup)
    metrics = await serve(build_metrics_app(agent.metrics.registry), LOCALHOST, 0)
    stack.push_async_callback(metrics.cleanup)
    return Endpoint(f"agent {user.user_id}", f"http://{LOCALHOST}:{bound_port(metrics)}/metrics",
                    status=f"http://{LOCALHOST}:{bound_port(status)}/")

"""The agent's md.<symbol> subscriptions against a real nats-server in JWT operator mode, on
credentials issued as the operator issues them (issue 10): after a downgrade the agent holds
exactly the md symbols its current ClientConfig allows, the server refuses nothing, and
md data, commands and reports keep flowing. The server's own word is the proof: its
subscription list for the agent's connection (``/connz``) and its log of violations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from pathlib import Path
from typing import Any

import nats
import pytest
from agent_harness import AgentHarness
from nats.aio.client import RawCredentials
from waiting import wait_for

from mt5fleet.client.app.agent import Agent
from mt5fleet.client.core import effective as effective_config
from mt5fleet.client.core.settings import LocalRiskLimits, SymbolSettings
from mt5fleet.operator.adapters import nats_accounts as na
from mt5fleet.operator.adapters.jwt_issuer import tenant_limits
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.adapters.tenant_accounts import TenantAccounts
from mt5fleet.operator.core import nats_jwt as nj
from mt5fleet.operator.core import permissions as pm
from mt5fleet.operator.core.admission import parse_spec
from mt5fleet.operator.core.models import TradingClient
from mt5fleet.operator.core.reconcile import desired_state
from mt5fleet.operator.core.tiers import DEFAULT_TIERS
from mt5fleet.proto import subjects
from mt5fleet.proto.v1 import config_pb2, market_data_pb2

LIMITS = nj.NatsLimits(payload=256 * 1024, subs=50, data=-1)
PRO_MD = ("EURUSD", "GBPUSD", "USDJPY")
FREE_MD = ("EURUSD",)


# =========================================================================== helpers

class Cuttable:
    """A TCP proxy in front of the server: ``cut()`` drops the agent's connection and
    refuses new ones until ``restore()``, so the agent misses what happens meanwhile and
    nats-py reconnects on its own (re-reading the creds file), as after a network outage."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: Any = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

    def cut(self) -> None:
        self.open = False
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        self._server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def server_subscriptions(server: Any, user_id: str) -> set[str]:
    """What the server holds for the agent's connection (the one subscribed to its commands)."""
    with urllib.request.urlopen(f"{server.monitor_url}/connz?subs=1&limit=1024", timeout=5) as response:
        connz = json.load(response)
    commands = subjects.user_subject(user_id, subjects.Channel.COMMANDS)
    held = [set(c.get("subscriptions_list", ())) for c in connz["connections"]]
    mine = [subs for subs in held if commands in subs]
    assert len(mine) <= 1, mine
    return mine[0] if mine else set()


def md_held(server: Any, user_id: str) -> set[str]:
    return {s for s in server_subscriptions(server, user_id) if s.startswith("md.")}


def violations(server: Any) -> list[str]:
    """The server's own log of refused subscriptions (it logs each at error level)."""
    return [line for line in server.log_path.read_text(errors="replace").splitlines()
            if "subscription violation" in line.lower() and '"md.' in line]


def refused_metric(agent: Any) -> float:
    return agent.metrics.md_refused._value.get()


class Tenant:
    """One user as the operator keeps it: its own tenant account, whose md imports follow
    the tier (re-signed on a change), and one user JWT inside it. ``exact`` grants the user
    its md subjects one by one instead of ``md.*`` (a user narrower than its config)."""

    def __init__(self, tenants: TenantAccounts, user_id: str, path: Path, *, exact: bool = False) -> None:
        self.tenants, self.user_id, self.path, self.exact = tenants, user_id, path, exact

    async def issue(self, md: tuple[str, ...]) -> na.IssuedUser:
        access = await self._account(md)
        grants = access.permissions if self.exact else access.tenant_permissions
        issued = await self.tenants.issue_user(self.user_id, grants)
        na.write_creds(self.path, issued)
        return issued

    async def narrow(self, md: tuple[str, ...]) -> None:
        """A downgrade: the account re-signed with fewer md imports; the user's JWT stays."""
        await self._account(md)

    async def _account(self, md: tuple[str, ...]) -> pm.UserAccess:
        access = pm.user_access(self.user_id, md, LIMITS)
        await self.tenants.ensure(self.user_id, access.md_symbols, tenant_limits(access))
        return access


async def put_config(js: Any, user_id: str, tier: str, trading: tuple[str, ...], correlation: tuple[str, ...] = (),
                     monitoring: tuple[str, ...] = ()) -> None:
    config = config_pb2.ClientConfig(user_id=user_id, tier_name=tier, trading_symbols=list(trading),
                                     correlation_symbols=list(correlation), monitoring_symbols=list(monitoring))
    config.risk.max_risk_per_trade = 1.0
    kv = await js.key_value(subjects.CONFIG_BUCKET)
    await kv.put(user_id, config.SerializeToString())


async def publish_md(nc: Any, symbol: str, marker: int) -> None:
    data = market_data_pb2.ClientMarketData(symbol=symbol, timestamp=marker)
    await nc.publish(subjects.market_data_subject(symbol), data.SerializeToString())


async def md_arrives(harness: AgentHarness, service: Any, symbol: str, marker: int) -> None:
    """The server's md for ``symbol`` reaches the agent's feed (republished until it does)."""
    async def delivered() -> bool:
        await publish_md(service, symbol, marker)
        latest = harness.agent.market_data.latest.get(symbol)
        return latest is not None and latest.timestamp == marker
    await wait_for(delivered, f"md.{symbol} delivered to the agent", timeout=10, interval=0.1)


@pytest.fixture
def tenants(nats_trust_chain, platform, tmp_path) -> TenantAccounts:
    return TenantAccounts(nats_trust_chain.platform, nats_trust_chain.operator_signing, platform[1],
                          DirectorySecretStore(tmp_path / "tenants"), trusted_signers=nats_trust_chain.trusted_signers)


@pytest.fixture
async def platform(operator_nats_server, nats_trust_chain):
    service = await nats.connect(operator_nats_server.url,
                                 user_credentials=RawCredentials(nats_trust_chain.service_user.creds_text))
    system = await nats.connect(operator_nats_server.url,
                                user_credentials=RawCredentials(nats_trust_chain.system_user.creds_text))
    yield service, system
    await service.close()
    await system.close()


@contextlib.asynccontextmanager
async def agent_on(server: Any, tmp_path: Path, user_id: str, creds: Path, service: Any, url: str | None = None,
                   local: tuple[tuple[str, ...], tuple[str, ...]] = (("EURUSD",), ())):
    trading, monitoring = local
    harness = AgentHarness(server, tmp_path, user_id=user_id,
                           nats={"creds_file": str(creds), **({"servers": [url]} if url else {})},
                           symbols={"trading": list(trading), "monitoring": list(monitoring)})
    harness.nc, harness.js = service, service.jetstream()
    await service.subscribe(subjects.user_subject(user_id, subjects.Channel.EXECUTIONS), cb=harness._on_report)
    harness.agent = None
    try:
        harness.agent = Agent(harness.settings, harness.sim, clock=harness.clock)
        await harness.agent.start()
        await wait_for(lambda: harness.agent.nc is not None and harness.agent.nc.is_connected, "agent connected")
        yield harness
    finally:
        if harness.agent is not None:
            await harness.agent.stop()


# =========================================================================== the downgrade

async def test_a_downgrade_while_away_leaves_exactly_the_new_md_set(operator_nats_server, tenants,
                                                                   platform, tmp_path):
    """Pro (3 md symbols) -> free (1) while the agent is cut off: nats-py reconnects on the
    new JWT by itself. No stale md subscription is replayed or retried; md, commands and
    reports still flow."""
    service, system = platform
    user = "mdgrace"
    tenant = Tenant(tenants, user, tmp_path / f"{user}.creds")
    await tenant.issue(PRO_MD)
    await put_config(service.jetstream(), user, "pro", PRO_MD[:2], monitoring=PRO_MD[2:])
    proxy = Cuttable(operator_nats_server.host, operator_nats_server.port)
    url = await proxy.start()
    try:
        async with agent_on(operator_nats_server, tmp_path, user, tenant.path, service, url) as harness:
            agent = harness.agent
            await wait_for(lambda: md_held(operator_nats_server, user) == {f"md.{s}" for s in PRO_MD},
                           lambda: f"pro md held; server has {md_held(operator_nats_server, user)}")
            await md_arrives(harness, service, "GBPUSD", 1)
            before = len(violations(operator_nats_server))

            proxy.cut()
            await wait_for(lambda: not agent.nc.is_connected, "agent cut off")
            await put_config(service.jetstream(), user, "free", FREE_MD)
            await tenant.narrow(FREE_MD)
            proxy.restore()

            await wait_for(lambda: agent.effective.tier == "free", "the free config read after reconnecting",
                           timeout=15)
            await wait_for(lambda: md_held(operator_nats_server, user) == {"md.EURUSD"},
                           lambda: f"free md held; server has {md_held(operator_nats_server, user)}")
            assert agent.market_data.subscribed == frozenset(FREE_MD)
            await md_arrives(harness, service, "EURUSD", 2)
            live = harness.command()
            await harness.send(live)
            assert (await harness.report(live.command_id)).command_id == live.command_id
            await asyncio.sleep(0.5)  # what a retry loop would do, it would have done by now
            assert violations(operator_nats_server)[before:] == []
            assert refused_metric(agent) == 0
            assert agent.nc.is_connected
    finally:
        await proxy.close()


async def test_a_downgrade_re_signs_the_account_and_the_connected_agent_follows_the_new_config(
        operator_nats_server, tenants, platform, tmp_path):
    """The operator's order: config first, then the tenant's account re-signed with fewer md
    imports; the agent keeps its connection and holds the free set only."""
    service, system = platform
    user = "mdhenry"
    tenant = Tenant(tenants, user, tmp_path / f"{user}.creds")
    await tenant.issue(PRO_MD)
    await put_config(service.jetstream(), user, "pro", PRO_MD)
    async with agent_on(operator_nats_server, tmp_path, user, tenant.path, service) as harness:
        agent = harness.agent
        await wait_for(lambda: md_held(operator_nats_server, user) == {f"md.{s}" for s in PRO_MD}, "pro md held")
        before = len(violations(operator_nats_server))
        await put_config(service.jetstream(), user, "free", FREE_MD)
        await tenant.narrow(FREE_MD)
        await wait_for(lambda: agent.effective.tier == "free" and agent.nc.is_connected
                       and md_held(operator_nats_server, user) == {"md.EURUSD"},
                       lambda: f"free md held; server has {md_held(operator_nats_server, user)}", timeout=15)
        await md_arrives(harness, service, "EURUSD", 3)
        await asyncio.sleep(0.5)
        assert violations(operator_nats_server)[before:] == []
        assert refused_metric(agent) == 0 and agent.reconnects == 0


async def test_a_wider_local_file_never_reaches_the_server(operator_nats_server, tenants, platform, tmp_path):
    """An agent (re)started after a downgrade with its local file still listing pro symbols:
    the md set is the server's ClientConfig, never the local fallback's."""
    service, _ = platform
    user = "mdiris"
    tenant = Tenant(tenants, user, tmp_path / f"{user}.creds")
    await tenant.issue(FREE_MD)
    await put_config(service.jetstream(), user, "free", FREE_MD)
    before = len(violations(operator_nats_server))
    async with agent_on(operator_nats_server, tmp_path, user, tenant.path, service,
                        local=(PRO_MD[:2], PRO_MD[2:])) as harness:
        await wait_for(lambda: harness.agent.effective.tier == "free", "the server's config applied")
        await wait_for(lambda: md_held(operator_nats_server, user) == {"md.EURUSD"}, "free md held")
        await md_arrives(harness, service, "EURUSD", 4)
        await asyncio.sleep(0.5)
        assert violations(operator_nats_server)[before:] == []
        assert refused_metric(harness.agent) == 0


async def test_a_refused_md_subscription_is_counted_once_and_never_disconnects(
        operator_nats_server, tenants, platform, tmp_path, caplog):
    """A config that lists more than the user's grants (a user issued with exact md grants,
    narrower than ``md.*``): the refusal is counted and logged once, not retried, and the
    agent stays connected; the rest flows."""
    service, _ = platform
    user = "mdjack"
    tenant = Tenant(tenants, user, tmp_path / f"{user}.creds", exact=True)
    await tenant.issue(FREE_MD)
    await put_config(service.jetstream(), user, "pro", FREE_MD)
    async with agent_on(operator_nats_server, tmp_path, user, tenant.path, service) as harness:
        agent = harness.agent
        await wait_for(lambda: md_held(operator_nats_server, user) == {"md.EURUSD"}, "md held")
        before = len(violations(operator_nats_server))
        await put_config(service.jetstream(), user, "pro", FREE_MD, correlation=("GBPUSD",))
        await wait_for(lambda: refused_metric(agent) == 1, "the refusal counted")
        for _ in range(3):  # more rounds of following the config: no retry
            agent.config.symbols_changed.set()
            await asyncio.sleep(0.2)
        assert refused_metric(agent) == 1
        assert len(violations(operator_nats_server)[before:]) == 1
        logged = [r for r in caplog.records if r.name.startswith("mt5fleet.agent") and "md.GBPUSD" in r.getMessage()]
        assert len(logged) == 1, logged
        assert agent.nc.is_connected and agent.reconnects == 0
        assert agent.market_data.subscribed == frozenset(FREE_MD)
        await md_arrives(harness, service, "EURUSD", 5)
        live = harness.command()
        await harness.send(live)
        assert (await harness.report(live.command_id)).command_id == live.command_id


# =========================================================================== the same set, pure

def _client(trading: tuple[str, ...], monitoring: tuple[str, ...]) -> TradingClient:
    return TradingClient(name="mdkate", namespace="default", generation=1, spec=parse_spec({
        "userId": "mdkate", "tier": "free", "broker": {"name": "IC Markets", "server": "ICMarketsSC-Demo"},
        "account": {"login": 1, "passwordSecretRef": {"name": "mt5-kate"}},
        "symbols": {"trading": list(trading), "monitoring": list(monitoring)}}))


@pytest.mark.parametrize("tier", ["free", "pro", "enterprise"])
def test_the_agent_subscribes_to_exactly_what_the_operator_grants(tier):
    desired = desired_state(_client(("EURUSD", "GBPUSD", "USDJPY"), ("AUDUSD", "XAUUSD", "NZDUSD", "USDCAD", "EURGBP")),
                            DEFAULT_TIERS[tier])
    granted = {s for s in desired.access.subscribe if s.startswith("md.")}
    assert {subjects.market_data_subject(s) for s in desired.access.md_symbols} == granted  # the account's imports
    agent = effective_config.from_client_config(desired.config, LocalRiskLimits(),
                                                SymbolSettings(trading=("NZDUSD",), monitoring=("USDCAD",)))
    assert {subjects.market_data_subject(s) for s in agent.md_symbols} == granted
    assert effective_config.from_local_settings(LocalRiskLimits(), SymbolSettings(trading=("EURUSD",))) \
        .md_symbols == ()

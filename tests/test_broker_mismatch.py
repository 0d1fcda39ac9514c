"""A broker mismatch stops trading, twice (issue 17): the real agent refuses opening commands
while its terminal is logged into another broker's account than its TradingClient declares,
and the operator makes the user's config close-only until the agent reports the declared
account. A real nats-server in JWT operator mode, the operator in local mode over a folder
(the same reconcile code as under kopf), real agents on simulated terminals."""

from __future__ import annotations

import shutil
from pathlib import Path

import nats
import pytest
import yaml
from agent_harness import WEDNESDAY_MORNING, AgentHarness, open_positions, opening_deals
from nats.aio.client import RawCredentials
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from mt5fleet.operator.adapters.appliers import CREDS_KEY, bootstrap_secret_name
from mt5fleet.operator.adapters.nats_accounts import create_trust_chain
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.app import runtime
from mt5fleet.operator.app.local import STATUS_SUFFIX, LocalOperator
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import AcceleratedClock
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats
from mt5fleet.proto.runtime.natsconn import NatsSettings
from mt5fleet.proto.v1 import commands_pb2, config_pb2, execution_pb2

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# bob-pro.yaml declares EuroRetail Markets on EuroRetail-Live (the simulated "eu-netting").
DECLARED = "'EuroRetail Markets' on server 'EuroRetail-Live'"
WRONG = "'Raw Trading Ltd (simulated)' on server 'ICMarketsSC-Demo'"    # the simulated "icm-raw"
REJECTED, FILLED = execution_pb2.EXECUTION_STATUS_REJECTED, execution_pb2.EXECUTION_STATUS_FILLED


@pytest.fixture
async def platform(tmp_path):
    """An operator-mode server, the service connection, the local operator over bob's file,
    all on one market clock (Wednesday morning: the market is open)."""
    clock = AcceleratedClock(WEDNESDAY_MORNING, 1.0)
    chain = create_trust_chain()
    with EmbeddedNats(server_name="mt5fleet-test-mismatch", store_dir=tmp_path / "store",
                      operator=chain.server_mode()) as server:
        service = await nats.connect(server.url, user_credentials=RawCredentials(chain.service_user.creds_text))
        await bootstrap.bootstrap(service.jetstream(), subjects.build_layout())
        trust, creds = tmp_path / "trust.json", tmp_path / "service.creds"
        trust.write_text(chain.to_json())
        creds.write_text(chain.service_user.creds_text)
        folder = tmp_path / "clients"
        folder.mkdir()
        for name in ("bob-pro.yaml", "secrets.yaml"):
            shutil.copy(EXAMPLES / name, folder / name)
        options = runtime.OperatorOptions(nats=NatsSettings(servers=(server.url,), creds_file=str(creds)),
                                          trust_file=trust, http_port=0)
        secrets = DirectorySecretStore(tmp_path / "state" / "secrets")
        running = await runtime.start(options, secrets, now_ms=lambda: int(clock.now() * 1000))
        local = LocalOperator(folder, running.reconciler, secrets, poll_s=0.05)
        try:
            yield server, service, local, running, secrets, folder, clock
        finally:
            await running.close()
            await service.close()


def agent_on(server, service, tmp_path: Path, creds: Path, broker: str, clock) -> AgentHarness:
    """Bob's agent on its creds, its terminal logged into the simulated ``broker``; the
    test client is the platform's service connection."""
    folder = tmp_path / broker
    folder.mkdir()
    harness = AgentHarness(server, folder, user_id="bob", nats={"creds_file": str(creds)},
                           simulated={"broker": broker, "seed": 7}, symbols={"trading": ["EURUSD"], "monitoring": []},
                           clock=clock)
    harness.nc, harness.js = service, service.jetstream()
    return harness


async def listen(harness: AgentHarness, service) -> None:
    await service.subscribe(subjects.user_subject("bob", subjects.Channel.EXECUTIONS), cb=harness._on_report)
    await harness.start_catchup_service()
    await harness.start_agent()
    await wait_for(lambda: harness.agent.effective.limits.broker_server == "EuroRetail-Live",
                   "the operator's config (with the declared broker) reached the agent")


async def config_of(service) -> config_pb2.ClientConfig:
    kv = await service.jetstream().key_value(subjects.CONFIG_BUCKET)
    return config_pb2.ClientConfig.FromString((await kv.get("bob")).value)


def agent_connected(folder: Path) -> dict:
    [entry] = yaml.safe_load((folder / ("bob-pro.yaml" + STATUS_SUFFIX)).read_text())
    return next(c for c in entry["status"]["conditions"] if c["type"] == "AgentConnected")


def rejected_count(harness: AgentHarness, reason: str) -> float:
    from prometheus_client import generate_latest

    text = generate_latest(harness.agent.metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mt5fleet_agent_commands_rejected_total" and sample.labels.get("reason") == reason:
                return sample.value
    return 0.0


def no_levels(**fields):
    return dict(entry_price=0, stop_loss=0, take_profit=0, **fields)


async def test_a_mismatch_is_refused_by_the_agent_and_made_close_only_by_the_operator_until_it_matches(
        platform, tmp_path):
    server, service, local, running, secrets, folder, clock = platform
    assert await local.scan() == 1
    assert not (await config_of(service)).close_only
    creds = secrets.path(bootstrap_secret_name("bob"), CREDS_KEY)

    wrong = agent_on(server, service, tmp_path, creds, "icm-raw", clock)
    try:
        await listen(wrong, service)
        # A position the trader opened by hand on the terminal's (wrong) account.
        sim = wrong.sim
        tick = sim.symbol_info_tick("EURUSD.raw")
        manual = sim.order_send({"action": sim.TRADE_ACTION_DEAL, "symbol": "EURUSD.raw", "volume": 0.05,
                                 "type": sim.ORDER_TYPE_BUY, "price": tick.ask, "deviation": 20})
        assert manual.retcode == sim.TRADE_RETCODE_DONE
        [held] = open_positions(sim)

        # 1. The agent itself: before the operator has even looked, the opening is refused.
        opening = wrong.command(lot_size=0.03)
        await wrong.send(opening)
        report = await wrong.report(opening.command_id)
        assert (report.status, report.reject_code) == (REJECTED, "broker_mismatch")
        assert WRONG in report.reason and DECLARED in report.reason
        assert open_positions(sim) == (held,) and not opening_deals(sim)   # nothing opened
        assert rejected_count(wrong, "broker_mismatch") == 1
        # Closing what the account holds stays possible.
        close = wrong.command(type=commands_pb2.CLOSE_POSITION, position_ticket=held.ticket, lot_size=0.05,
                              **no_levels())
        await wrong.send(close)
        assert (await wrong.report(close.command_id)).status == FILLED
        assert not open_positions(sim)

        # 2. The platform: the timer's pass sees the agent's account, says so, makes the config close-only.
        async def mismatch_seen() -> bool:
            await local.observe()
            return agent_connected(folder)["reason"] == "BrokerMismatch"
        await wait_for(mismatch_seen, "BrokerMismatch from the agent's account", timeout=15, interval=0.2)
        condition = agent_connected(folder)
        assert condition["status"] == "False" and WRONG in condition["message"] and DECLARED in condition["message"]
        assert "close-only" in condition["message"]
        assert (await config_of(service)).close_only
        assert running.metrics.broker_mismatches._value.get() == 1
        await wait_for(lambda: wrong.agent.effective.limits.close_only, "close-only reached the agent live")
        # A full reconcile (kopf's timer, a forced resync) keeps it so: no flapping.
        assert await local.scan(force=True) == 1
        assert (await config_of(service)).close_only and agent_connected(folder)["reason"] == "BrokerMismatch"
        before = await config_of(service)
        refused = wrong.command(lot_size=0.03)
        await wrong.send(refused)
        assert (await wrong.report(refused.command_id)).reject_code == "broker_mismatch"
        assert not open_positions(sim) and rejected_count(wrong, "broker_mismatch") == 2
        assert await config_of(service) == before   # a refusal changes nothing on the platform
    finally:
        await wrong.agent.stop()
        await wrong.catchup.stop()

    # 3. The trader logs the terminal into the declared account: the guard is lifted.
    right = agent_on(server, service, tmp_path, creds, "eu-netting", clock)
    try:
        await listen(right, service)

        async def matching_seen() -> bool:
            await local.observe()
            return agent_connected(folder)["reason"] == "Heartbeating"
        await wait_for(matching_seen, "the matching account lifts BrokerMismatch", timeout=15, interval=0.2)
        assert not (await config_of(service)).close_only
        assert running.metrics.broker_mismatches._value.get() == 0
        await wait_for(lambda: not right.agent.effective.limits.close_only, "the lift reached the agent live")
        opening = right.command(lot_size=0.03)
        await right.send(opening)
        assert (await right.report(opening.command_id)).status == FILLED
        assert len(open_positions(right.sim)) == 1
        assert await local.scan(force=True) == 1 and not (await config_of(service)).close_only
    finally:
        await right.agent.stop()
        await right.catchup.stop()

"""What the agent streams: prices, account, symbol specs and heartbeats on the right
subjects with the right content; canonical symbols on the wire; live config changes."""

from __future__ import annotations

import pytest
from agent_harness import AgentHarness, stream_messages
from waiting import wait_for

from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.client.app.config_watch import ConfigWatch
from mt5fleet.client.core.settings import LocalRiskLimits, SymbolSettings
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import ManualClock
from mt5fleet.proto.domain.config import SealedCredentials
from mt5fleet.proto.v1 import account_pb2, config_pb2, heartbeat_pb2, prices_pb2, symbols_pb2
from mt5fleet.proto.validation import (
    check_account,
    check_heartbeat,
    check_price_batch,
    check_symbol_specs,
    decode,
)


@pytest.fixture
async def harness(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path) as h:
        yield h


async def _last(h: AgentHarness, stream: str, channel: subjects.Channel) -> bytes:
    subject = subjects.user_subject(h.user_id, channel)
    await wait_for_stored(h, stream, subject)
    message = await h.js.get_msg(stream, subject=subject, direct=True)
    return message.data


async def wait_for_stored(h: AgentHarness, stream: str, subject: str) -> None:
    async def stored() -> bool:
        info = await h.js.stream_info(stream, subjects_filter=subject)
        return bool((info.state.subjects or {}).get(subject))
    await wait_for(stored, f"a message stored on {subject}", timeout=10)


async def test_price_batches_carry_canonical_symbols_with_the_brokers_quotes(harness):
    raw = await _last(harness, subjects.PRICES_STREAM, subjects.Channel.PRICES)
    checked = check_price_batch(decode(prices_pb2.ClientPriceStream, raw), harness.now_ms())
    assert not checked.rejected
    batch = checked.batch
    assert batch.user_id == "alice" and {q.symbol for q in batch.quotes} == {"EURUSD", "GBPUSD", "USDJPY"}
    for quote in batch.quotes:
        tick = harness.sim.symbol_info_tick(quote.broker_symbol)
        assert quote.broker_symbol != quote.symbol and quote.broker_symbol.startswith(quote.symbol)
        assert quote.ask >= quote.bid > 0
        assert abs(quote.bid - tick.bid) < 0.01 * tick.bid  # the broker's price, moments ago


async def test_account_profile_reports_the_terminals_figures(harness):
    raw = await _last(harness, subjects.ACCOUNT_STREAM, subjects.Channel.ACCOUNT)
    profile = decode(account_pb2.AccountProfile, raw)
    snapshot = check_account(profile, harness.now_ms())
    info = harness.sim.account_info()
    assert snapshot.balance == pytest.approx(info.balance)
    assert profile.account_number == str(info.login) and profile.base_currency == info.currency
    assert profile.broker_name == info.company and profile.server_name == info.server


async def test_account_update_is_sent_when_a_position_opens(harness):
    subject = subjects.user_subject("alice", subjects.Channel.ACCOUNT)
    await wait_for_stored(harness, subjects.ACCOUNT_STREAM, subject)
    command = harness.command()
    await harness.send(command)
    await harness.report(command.command_id)

    async def has_position_update() -> bool:
        for raw in await stream_messages(harness.js, subjects.ACCOUNT_STREAM, subject):
            if account_pb2.AccountProfile.FromString(raw).open_positions == 1:
                return True
        return False
    await wait_for(has_position_update, "an account update after the position opened", timeout=5)


async def test_symbol_specs_describe_the_brokers_symbols(harness):
    raw = await _last(harness, subjects.SYMBOLS_STREAM, subjects.Channel.SYMBOLS)
    specs = check_symbol_specs(decode(symbols_pb2.SymbolSpecList, raw), harness.now_ms())
    assert not specs.rejected
    eurusd = specs.spec("EURUSD")
    info = harness.sim.symbol_info(eurusd.broker_symbol)
    assert (eurusd.digits, eurusd.point, eurusd.volume_step, eurusd.stops_level) == (
        info.digits, info.point, info.volume_step, info.trade_stops_level)
    assert specs.spec("USDJPY").digits == 3


async def test_heartbeat_carries_the_agents_key_figures(harness):
    raw = await _last(harness, subjects.HEARTBEAT_STREAM, subjects.Channel.HEARTBEAT)
    beat = decode(heartbeat_pb2.Heartbeat, raw)
    check_heartbeat(beat, harness.now_ms())
    assert beat.user_id == "alice" and beat.terminal_connected and beat.agent_version
    assert beat.outbox_depth == 0 and beat.session_id == harness.agent.session_id


async def test_a_new_client_config_applies_live(harness):
    """The operator writes the config; the agent streams the new symbol and enforces the
    new limits without a restart."""
    kv = await harness.js.key_value(subjects.CONFIG_BUCKET)
    config = config_pb2.ClientConfig(user_id="alice", tier_name="pro", trading_symbols=["EURUSD", "AUDUSD"],
                                     monitoring_symbols=["USDJPY"])
    config.risk.max_risk_per_trade = 1.0
    await kv.put("alice", config.SerializeToString())
    await wait_for(lambda: harness.agent.effective.tier == "pro", "config applied")
    await wait_for(lambda: "AUDUSD" in harness.agent.streams.latest, "AUDUSD streamed", timeout=10)
    assert harness.agent.streams.latest["AUDUSD"].broker_symbol == "AUDUSD.raw"  # discovered from the terminal
    # GBPUSD left the trading set: a command for it is refused by the agent itself.
    refused = harness.command(symbol="GBPUSD")
    await harness.send(refused)
    assert (await harness.report(refused.command_id)).reject_code == "symbol_not_allowed"


async def test_the_mt5_password_the_operator_sealed_logs_the_terminal_in(fresh_nats_server, tmp_path):
    """No password in the agent's own config: the one the operator sealed under the
    agent's key (its bootstrap Secret's agent.key) is used; a foreign key is refused."""
    from mt5fleet.client.sim.broker import BROKERS
    from mt5fleet.proto.runtime import sealing as credentials

    key_file = tmp_path / "agent.key"
    key_file.write_text(credentials.generate_key())
    broker = BROKERS["icm-raw"]
    async with AgentHarness(fresh_nats_server, tmp_path, mt5={"key_file": str(key_file)}) as h:
        assert h.agent.terminal.login.password is None

        def config_sealed_with(key: credentials.AgentKey) -> bytes:
            sealed = credentials.seal(broker.password, key, login=broker.login, server=broker.server)
            config = config_pb2.ClientConfig(user_id="alice", tier_name="pro", trading_symbols=["EURUSD"])
            config.risk.max_risk_per_trade = 1.0
            config.mt5_credentials.CopyFrom(credentials.to_proto(sealed, login=broker.login, server=broker.server))
            return config.SerializeToString()

        kv = await h.js.key_value(subjects.CONFIG_BUCKET)
        foreign = credentials.AgentKey(bytes(range(32)))
        await kv.put("alice", config_sealed_with(foreign))
        await wait_for(lambda: h.agent.metrics.invalid.labels("EncryptedCredentials")._value.get() == 1,
                       "a password sealed under another key refused")
        assert h.agent.terminal.login.password is None
        await kv.put("alice", config_sealed_with(credentials.load_key(key_file)))
        await wait_for(lambda: h.agent.terminal.login.login == broker.login, "the server's login used")
        assert h.agent.terminal.login.password.reveal() == broker.password
        await wait_for(lambda: h.agent.terminal.connected, "terminal logged in with it")
        assert h.sim.account_info().login == broker.login


def test_a_client_config_is_read_once_into_the_typed_value_under_the_agents_user_id():
    """No NATS needed: the bytes as the KV holds them, checked with the user id as the key.
    A config the operator wrote weeks ago, or on a clock minutes ahead, still applies."""
    now_s = 1_800_000_000
    handed: list[SealedCredentials] = []
    metrics = AgentMetrics()
    watch = ConfigWatch(user_id="alice", local_risk=LocalRiskLimits(max_daily_loss=250.0),
                        local_symbols=SymbolSettings(trading=("EURUSD",)), clock=ManualClock(now_s),
                        metrics=metrics, on_credentials=handed.append)
    config = config_pb2.ClientConfig(user_id="bob", tier_name="pro", trading_symbols=["GBPUSD"],
                                     updated_at=(now_s - 30 * 86_400) * 1000)
    watch.apply_raw(config.SerializeToString())
    assert watch.effective.tier == "local" and metrics.invalid.labels("ClientConfig")._value.get() == 1
    config.user_id = "alice"
    config.mt5_credentials.login, config.mt5_credentials.server = 5012345, "Broker-Demo"
    config.mt5_credentials.nonce, config.mt5_credentials.ciphertext = b"n" * 12, b"c" * 24
    watch.apply_raw(config.SerializeToString())
    assert (watch.effective.tier, watch.effective.trading_symbols) == ("pro", ("GBPUSD",))
    assert watch.effective.limits.max_daily_loss == 250.0  # left at 0 by the server: the local fallback
    assert watch.symbols_changed.is_set()
    assert [(c.login, c.server) for c in handed] == [(5012345, "Broker-Demo")]
    config.updated_at = (now_s + 600) * 1000
    config.tier_name = "elite"
    watch.apply_raw(config.SerializeToString())
    assert watch.effective.tier == "elite"

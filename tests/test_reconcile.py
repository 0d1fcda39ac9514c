"""The pure reconcile core: every tier rule, the config a user gets, and every condition."""

from __future__ import annotations

import pytest

from mt5fleet.operator.core import reconcile
from mt5fleet.operator.core.admission import parse_spec
from mt5fleet.operator.core.models import TradingClient, TradingClientStatus
from mt5fleet.operator.core.reconcile import AgentSeen, ApplyOutcome, desired_state, select_symbols, status_for
from mt5fleet.operator.core.tiers import DEFAULT_TIERS, tiers_from_mapping
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.config import ClientConfig, SizingMode
from mt5fleet.proto.domain.instruments import STANDARD_SYMBOLS
from mt5fleet.proto.domain.trading import AccountType, SubscriptionTier
from mt5fleet.proto.validation import check_client_config
from mt5fleet.proto.validation_config import client_config_message
from mt5fleet.proto.validation_rules import DEFAULT_LIMITS

NOW = 1_795_014_000_000
FREE, PRO, ENTERPRISE = DEFAULT_TIERS["free"], DEFAULT_TIERS["pro"], DEFAULT_TIERS["enterprise"]


def client(trading=("EURUSD", "GBPUSD"), monitoring=(), tier="pro", generation=3, **spec) -> TradingClient:
    body = {"userId": "alice", "tier": tier, "broker": {"name": "IC Markets", "server": "ICMarketsSC-Demo"},
            "account": {"login": 51234567, "passwordSecretRef": {"name": "alice-mt5"}},
            "symbols": {"trading": list(trading), "monitoring": list(monitoring)}, **spec}
    return TradingClient(namespace="fx", name="alice", generation=generation, spec=parse_spec(body))


def conditions(status: TradingClientStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


# ---------------------------------------------------------------------- tier rules
def test_free_tier_trades_two_pairs_and_says_which_were_left_out():
    selection = select_symbols(client(("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")).spec, FREE, None)
    assert selection.symbols.trading == ("EURUSD", "GBPUSD")
    [finding] = selection.findings
    assert finding.reason == "TradingPairsOverLimit"
    assert "4 trading symbols asked, tier free allows 2 (2 over): USDJPY, AUDUSD left out" in finding.message


def test_free_tier_gets_no_correlation_pairs_even_with_strong_measurements():
    matrix = {("EURUSD", "USDCHF"): -0.95}
    assert select_symbols(client(("EURUSD",)).spec, FREE, matrix).symbols.correlation == ()


def test_monitoring_pairs_are_capped_by_the_tier_and_reported():
    monitoring = ("USDJPY", "AUDUSD", "NZDUSD", "USDCAD", "EURJPY")
    selection = select_symbols(client(monitoring=monitoring).spec, FREE, None)
    assert selection.symbols.monitoring == monitoring[:4]
    assert [f.reason for f in selection.findings] == ["MonitoringPairsOverLimit"]
    assert "EURJPY left out" in selection.findings[0].message


def test_pro_tier_allows_five_trading_pairs_exactly():
    five = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "NZDUSD")
    assert select_symbols(client(five).spec, PRO, None).findings == ()
    six = select_symbols(client((*five, "USDCAD")).spec, PRO, None)
    assert six.symbols.trading == five and six.findings[0].reason == "TradingPairsOverLimit"


def test_enterprise_is_unlimited_and_may_use_custom_pairs():
    many = tuple(sorted(STANDARD_SYMBOLS))[:20] + ("US30", "BTCUSD")
    selection = select_symbols(client(many, tier="enterprise").spec, ENTERPRISE, None)
    assert selection.symbols.trading == many and selection.findings == ()


def test_custom_pairs_are_refused_below_enterprise_with_the_symbols_named():
    selection = select_symbols(client(("EURUSD", "BTCUSD"), monitoring=("US30",)).spec, PRO, None)
    assert selection.symbols.trading == ("EURUSD",) and selection.symbols.monitoring == ()
    assert [f.reason for f in selection.findings] == ["CustomPairsNotAllowed", "CustomPairsNotAllowed"]
    assert "BTCUSD" in selection.findings[0].message and "US30" in selection.findings[1].message


def test_correlation_pairs_come_from_measurements_strongest_first_and_capped():
    matrix = {("EURUSD", "USDCHF"): -0.93, ("EURUSD", "EURGBP"): 0.71, ("EURUSD", "AUDUSD"): 0.85,
              ("EURUSD", "USDJPY"): 0.2}
    pro = select_symbols(client(("EURUSD",)).spec, PRO, matrix).symbols
    assert pro.correlation == ("USDCHF", "AUDUSD", "EURGBP")  # |rho| >= 0.7, strongest first
    capped = tiers_from_mapping({"pro": {"maxCorrelationPairs": 1}})["pro"]
    assert select_symbols(client(("EURUSD",)).spec, capped, matrix).symbols.correlation == ("USDCHF",)


def test_correlation_falls_back_to_the_static_matrix_before_data_exists():
    assert select_symbols(client(("EURUSD",)).spec, PRO, None).symbols.correlation == ("USDCHF", "EURGBP", "GBPUSD")


def test_correlation_pairs_never_repeat_trading_or_monitoring_symbols():
    selection = select_symbols(client(("EURUSD", "GBPUSD"), monitoring=("USDCHF",)).spec, PRO, None).symbols
    assert not set(selection.correlation) & {"EURUSD", "GBPUSD", "USDCHF"}


def test_a_custom_tier_from_config_overrides_only_what_it_names():
    tiers = tiers_from_mapping({"gold": {"maxTradingPairs": 3, "customPairs": True}})
    assert tiers["gold"].max_trading_pairs == 3 and tiers["gold"].custom_pairs
    assert tiers["gold"].max_monitoring_pairs == FREE.max_monitoring_pairs
    desired = desired_state(client(("EURUSD", "GBPUSD", "BTCUSD", "USDJPY"), tier="gold"), tiers["gold"])
    assert desired.config.tier is SubscriptionTier.CUSTOM and desired.config.tier_name == "gold"
    assert desired.config.trading_symbols == ("EURUSD", "GBPUSD", "BTCUSD")


@pytest.mark.parametrize("raw, problem", [
    ({"pro": {"maxTradingPairs": "five"}}, "tiers.pro.maxTradingPairs: expected int"),
    ({"pro": {"tradingPairs": 5}}, "unknown setting(s) tradingPairs"),
    ({"pro": 5}, "tiers.pro: expected a mapping"),
    ({"pro": {"maxSubscriptions": -5}}, "must not be negative"),
])
def test_a_bad_tier_config_names_the_setting(raw, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        tiers_from_mapping(raw)


# ---------------------------------------------------------------------- desired state
def test_the_client_config_carries_spec_tier_and_shard():
    body = client(("EURUSD",), monitoring=("USDJPY",), generation=7,
                  risk={"maxRiskPerTrade": 0.5, "maxOpenPositions": 3, "maxSpreadPoints": 25,
                        "allowedSymbols": ["EURUSD"]},
                  preferences={"sizingMode": "equityMultiplier", "sizingValue": 0.02, "conservativeMode": True},
                  closeOnly=True)
    desired = desired_state(body, PRO)
    config = desired.config
    assert isinstance(config, ClientConfig) and config.credentials is None and config.updated_at_ms == 0
    assert config.user_id == "alice" and config.tier is SubscriptionTier.PRO
    assert config.trading_symbols == ("EURUSD",) and config.monitoring_symbols == ("USDJPY",)
    assert config.risk.max_risk_per_trade_pct == 0.5 and config.preferences.max_open_positions == 3
    assert config.risk.allowed_symbols == ("EURUSD",) and config.risk.max_spread_points == 25
    assert config.preferences.sizing_mode is SizingMode.EQUITY_MULTIPLIER and config.preferences.sizing_value == 0.02
    assert config.close_only and config.preferences.conservative_mode and config.generation == 7
    assert config.limits.max_trading_pairs == 5 and config.limits.correlation_analysis
    assert config.worker_shard == desired.shard == subjects.partition_of("alice")
    assert config.account_type is AccountType.DEMO and config.broker_server == "ICMarketsSC-Demo"


def test_the_symbol_map_is_sorted_as_the_typed_config_keeps_it():
    desired = desired_state(client(broker={"name": "IC Markets", "server": "ICMarketsSC-Demo",
                                           "symbolMap": {"XAUUSD": "GOLD", "EURUSD": "EURUSD.a"}}), PRO)
    assert desired.config.symbol_map == (("EURUSD", "EURUSD.a"), ("XAUUSD", "GOLD"))


def test_the_user_may_read_market_data_of_its_effective_symbols_only():
    desired = desired_state(client(("EURUSD", "GBPUSD", "USDJPY"), monitoring=("AUDUSD",)), FREE)
    md = [s for s in desired.access.subscribe if s.startswith("md.")]
    assert md == ["md.AUDUSD", "md.EURUSD", "md.GBPUSD"]  # USDJPY is over the free limit


def test_a_paused_user_keeps_its_config_but_loses_its_credentials():
    desired = desired_state(client(paused=True), PRO)
    assert desired.config.paused and not desired.credentials_active


def test_subjects_are_named_by_the_one_subjects_module():
    assert desired_state(client(), PRO).subjects["commands"] == "tc.alice.commands"


@pytest.mark.parametrize("users, replicas", [(0, 1), (1, 1), (2000, 1), (2001, 2), (10_000, 5), (10**6, 8)])
def test_worker_pool_grows_with_users_within_the_partitions(users, replicas):
    assert reconcile.worker_pool_size(users) == replicas


# ---------------------------------------------------------------------- status and conditions
OK = ApplyOutcome(nats_ready=True, credentials_issued=True, credentials_secret="alice-agent")
LIVE = AgentSeen(at_ms=NOW - 3000, version="0.1.0", terminal_connected=True, latency_ms=42.0)


def test_a_provisioned_user_with_a_live_agent_is_ready():
    tc = client()
    status = status_for(tc, desired_state(tc, PRO), OK, LIVE, TradingClientStatus(), NOW)
    assert status.phase == "Ready" and status.observed_generation == 3
    assert conditions(status) == {"Ready": ("True", "Reconciled"), "NatsProvisioned": ("True", "Provisioned"),
                                  "CredentialsIssued": ("True", "Issued"),
                                  "AgentConnected": ("True", "Heartbeating"),
                                  "TierCompliant": ("True", "WithinLimits")}
    assert status.credentials_secret == "alice-agent" and status.latency_ms == 42.0
    assert status.last_heartbeat == reconcile.rfc3339(NOW - 3000)
    assert all(c.observed_generation == 3 for c in status.conditions)


def test_over_the_tier_is_degraded_with_the_reason_and_the_amount():
    tc = client(("EURUSD", "GBPUSD", "USDJPY"))
    status = status_for(tc, desired_state(tc, FREE), OK, LIVE, TradingClientStatus(), NOW)
    compliant = next(c for c in status.conditions if c.type == "TierCompliant")
    assert (compliant.status, compliant.reason) == ("False", "TradingPairsOverLimit")
    assert "allows 2 (1 over): USDJPY" in compliant.message and status.phase == "Degraded"


@pytest.mark.parametrize("agent, expected", [
    (AgentSeen(), ("Unknown", "NeverSeen")),
    (AgentSeen(at_ms=NOW - 60_000, terminal_connected=True), ("False", "HeartbeatMissing")),
    (AgentSeen(at_ms=NOW - 1000, terminal_connected=False), ("True", "TerminalDisconnected")),
])
def test_agent_connected_follows_the_heartbeats(agent, expected):
    tc = client()
    status = status_for(tc, desired_state(tc, PRO), OK, agent, TradingClientStatus(), NOW)
    assert conditions(status)["AgentConnected"] == expected


def test_a_failed_apply_is_not_ready_and_says_which_step_failed():
    tc = client()
    outcome = ApplyOutcome(nats_ready=False, credentials_issued=False, error="config entry: nats: timeout")
    status = status_for(tc, desired_state(tc, PRO), outcome, AgentSeen(), TradingClientStatus(), NOW)
    assert status.phase == "Provisioning"
    assert conditions(status)["Ready"] == ("False", "NotReconciled")
    assert next(c for c in status.conditions if c.type == "NatsProvisioned").message == "config entry: nats: timeout"


def test_a_paused_user_is_paused_not_failed():
    tc = client(paused=True)
    outcome = ApplyOutcome(nats_ready=True, credentials_issued=False)
    status = status_for(tc, desired_state(tc, PRO), outcome, AgentSeen(), TradingClientStatus(), NOW)
    assert status.phase == "Paused" and conditions(status)["CredentialsIssued"] == ("False", "Paused")
    assert conditions(status)["Ready"] == ("True", "Reconciled")


def test_last_transition_time_moves_only_when_a_condition_changes():
    tc = client()
    desired = desired_state(tc, PRO)
    first = status_for(tc, desired, OK, LIVE, TradingClientStatus(), NOW)
    still_live = AgentSeen(at_ms=NOW + 58_000, terminal_connected=True)
    later = status_for(tc, desired, OK, still_live, first, NOW + 60_000)
    assert [c.last_transition_time for c in later.conditions] == [c.last_transition_time for c in first.conditions]
    silent = reconcile.with_agent(later, AgentSeen(at_ms=NOW - 3000), NOW + 120_000)
    changed = {c.type: c.last_transition_time for c in silent.conditions}
    assert changed["AgentConnected"] == reconcile.rfc3339(NOW + 120_000)
    assert changed["Ready"] == first.conditions[0].last_transition_time


def test_an_invalid_spec_keeps_what_was_there_and_says_why():
    previous = status_for(client(), desired_state(client(), PRO), OK, LIVE, TradingClientStatus(), NOW)
    status = reconcile.invalid_status(4, ["spec.userId: 'Al' does not match"], previous, NOW)
    assert status.phase == "Invalid" and status.observed_generation == 4
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "InvalidSpec") and "spec.userId" in ready.message
    assert status.effective_symbols == previous.effective_symbols


def test_the_desired_access_grants_the_catchup_request_no_consumer_and_the_tier_limits():
    desired = desired_state(client(("EURUSD", "GBPUSD", "USDJPY"), monitoring=("AUDUSD",)), FREE)
    assert "tc.alice.catchup" in desired.access.publish
    assert desired.subjects["catchup"] == "tc.alice.catchup"
    assert not [s for s in desired.access.publish if ".CONSUMER." in s or s.startswith("$JS.ACK")]
    assert set(s for s in desired.access.subscribe if s.startswith("md.")) == {"md.EURUSD", "md.GBPUSD", "md.AUDUSD"}
    assert (desired.access.limits.payload, desired.access.limits.subs) == (FREE.max_payload_bytes,
                                                                           FREE.max_subscriptions)


def test_every_limit_the_crd_admits_is_one_the_config_readers_accept():
    # A spec at every maximum the CRD allows must give a ClientConfig the workers and the
    # agent read: otherwise the user would be dropped and the entry rewritten at every pass.
    edge = client(risk={"maxRiskPerTrade": 100, "maxDailyLoss": DEFAULT_LIMITS.max_amount, "maxDrawdown": 1,
                        "maxOpenPositions": 1000, "maxSpreadPoints": 100_000, "maxLot": DEFAULT_LIMITS.max_lot,
                        "maxDeviationPoints": 10_000},
                  preferences={"preferredLotSize": DEFAULT_LIMITS.max_lot, "sizingValue": 1000,
                               "maxQuoteAgeMs": 600_000, "maxSignalAgeMs": 3_600_000})
    config = desired_state(edge, ENTERPRISE).config
    assert check_client_config(client_config_message(config), NOW, key="alice") == config
    with pytest.raises(ValueError, match="spec.risk.maxLot"):
        client(risk={"maxLot": DEFAULT_LIMITS.max_lot * 2})

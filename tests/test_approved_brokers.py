"""Approved brokers (issue 17): the list, the Invalid TradingClient naming its broker, and the
agent's reported account checked against the declared broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mt5fleet.operator.app.runtime import load_brokers
from mt5fleet.operator.app.service import Reconciler
from mt5fleet.operator.core import reconcile
from mt5fleet.operator.core.admission import parse_spec
from mt5fleet.operator.core.brokers import ANY_BROKER, ApprovedBrokers, approved_brokers_from_mapping, mismatch
from mt5fleet.operator.core.models import TradingClient, TradingClientStatus
from mt5fleet.operator.core.reconcile import AgentSeen
from mt5fleet.operator.core.tiers import DEFAULT_TIERS

NOW = 1_795_014_000_000
APPROVED = ApprovedBrokers(companies=("IC Markets", "Pepperstone Group Limited"), servers=("ICMarketsSC-*",))


def client(name="IC Markets", server="ICMarketsSC-Demo") -> TradingClient:
    body = {"userId": "alice", "tier": "pro", "broker": {"name": name, "server": server},
            "account": {"login": 51234567, "passwordSecretRef": {"name": "alice-mt5"}},
            "symbols": {"trading": ["EURUSD"]}}
    return TradingClient(namespace="fx", name="alice", generation=2, spec=parse_spec(body))


def test_companies_match_without_case_or_extra_spaces_and_servers_by_pattern():
    assert APPROVED.approves("ic  markets ", "whatever")
    assert APPROVED.approves("Unknown Ltd", "icmarketssc-live07")
    assert not APPROVED.approves("Shady FX", "ShadyFX-Live")
    assert ANY_BROKER.approves("Shady FX", "ShadyFX-Live")  # nothing configured: every broker


def test_a_refusal_names_the_broker_and_the_list():
    why = APPROVED.refusal("Shady FX", "ShadyFX-Live")
    assert why is not None and "'Shady FX'" in why and "'ShadyFX-Live'" in why and "server ICMarketsSC-*" in why


@pytest.mark.parametrize("raw, problem", [
    ("IC Markets", "mapping"),
    ({"company": ["IC Markets"]}, "unknown key(s) ['company']"),
    ({"companies": "IC Markets"}, "companies must be a list"),
    ({"servers": [""]}, "servers entry '' is not a non-empty name"),
])
def test_bad_configuration_is_refused_with_a_clear_error(raw, problem):
    with pytest.raises(ValueError, match="approved brokers") as error:
        approved_brokers_from_mapping(raw)
    assert problem in str(error.value)


def test_the_brokers_file_in_helms_shape(tmp_path: Path):
    path = tmp_path / "brokers.yaml"
    path.write_text("approvedBrokers:\n  companies: [IC Markets]\n  servers: ['Pepperstone-*']\n")
    assert load_brokers(path) == ApprovedBrokers(("IC Markets",), ("Pepperstone-*",))
    assert load_brokers(None) is ANY_BROKER
    path.write_text("approvedBrokers:\n  companys: [IC Markets]\n")
    with pytest.raises(ValueError, match="brokers.yaml.*unknown key"):
        load_brokers(path)


def test_an_unapproved_broker_makes_the_trading_client_invalid_and_provisions_nothing():
    class NoAppliers:
        def __getattr__(self, name):
            raise AssertionError(f"nothing may be applied for an unapproved broker ({name})")

    reconciler = Reconciler(NoAppliers(), DEFAULT_TIERS, brokers=APPROVED, now_ms=lambda: NOW)  # type: ignore[arg-type]
    result = asyncio.run(reconciler.reconcile(client("Shady FX", "ShadyFX-Live"), TradingClientStatus()))
    assert result.status.phase == "Invalid"
    [ready] = result.status.conditions
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", "BrokerNotApproved")
    assert "spec.broker: broker 'Shady FX' (server 'ShadyFX-Live') is not an approved broker" in ready.message


def test_the_agents_account_must_match_the_declared_broker():
    assert mismatch("IC Markets", "ICMarketsSC-Demo", "IC Markets", "ICMarketsSC-Demo") is None
    assert mismatch("IC Markets", "ICMarketsSC-Demo", "", "") is None  # nothing reported yet
    # The legal entity MT5 reports is not the brand a TradingClient names: the server decides.
    assert mismatch("IC Markets", "ICMarketsSC-Demo", "Raw Trading Ltd", "icmarketssc-demo") is None
    why = mismatch("IC Markets", "ICMarketsSC-Demo", "Other Broker Ltd", "OtherBroker-Live")
    assert why == ("the agent's MT5 account is with 'Other Broker Ltd' on server 'OtherBroker-Live', "
                   "but the TradingClient declares 'IC Markets' on server 'ICMarketsSC-Demo'")


def test_a_mismatch_is_visible_in_agent_connected():
    c = client()
    desired = reconcile.desired_state(c, DEFAULT_TIERS["pro"])
    outcome = reconcile.ApplyOutcome(nats_ready=True, credentials_issued=True, credentials_secret="s")
    seen = AgentSeen(at_ms=NOW - 1000, terminal_connected=True, company="IC Markets", server="OtherSrv-Live")
    status = reconcile.status_for(c, desired, outcome, seen, TradingClientStatus(), NOW)
    agent = {x.type: x for x in status.conditions}["AgentConnected"]
    assert (agent.status, agent.reason) == ("False", "BrokerMismatch")
    assert "'IC Markets' on server 'OtherSrv-Live', but the TradingClient declares 'IC Markets' on server " \
           "'ICMarketsSC-Demo'" in agent.message and "close-only" in agent.message
    # The timer's pass says the same, and recovers once the account matches.
    again = reconcile.with_agent(status, seen, NOW, ("IC Markets", "ICMarketsSC-Demo"))
    assert {x.type: x.reason for x in again.conditions}["AgentConnected"] == "BrokerMismatch"
    fine = reconcile.with_agent(status, AgentSeen(at_ms=NOW - 1000, terminal_connected=True,
                                                  company="IC Markets", server="ICMarketsSC-Demo"),
                                NOW, ("IC Markets", "ICMarketsSC-Demo"))
    assert {x.type: x.reason for x in fine.conditions}["AgentConnected"] == "Heartbeating"


def test_a_mismatch_makes_the_desired_config_close_only_and_a_match_gives_back_the_specs_own():
    c = client()
    desired = reconcile.desired_state(c, DEFAULT_TIERS["pro"])
    wrong = reconcile.broker_mismatch(c, AgentSeen(at_ms=NOW, company="Other Ltd", server="Other-Live"))
    assert wrong is not None and "'Other Ltd' on server 'Other-Live'" in wrong and "'IC Markets'" in wrong
    guarded = reconcile.guarded(desired, wrong)
    assert guarded.config.close_only and not guarded.config.paused
    assert guarded.credentials_active  # not paused: the agent keeps its credentials, can close and report
    assert guarded.config.evolve(close_only=False) == desired.config  # nothing else differs
    assert reconcile.guarded(desired, None) is desired
    assert reconcile.broker_mismatch(c, AgentSeen(at_ms=NOW, company="Raw Trading Ltd", server="ICMarketsSC-Demo")) \
        is None

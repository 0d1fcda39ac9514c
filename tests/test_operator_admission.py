"""Local mode's admission (operator/core/admission.py): a TradingClient body checked as the
API server checks it, against the generated CRD, by jsonschema and cel-python; the
Kubernetes semantics reproduced around them (defaulting, null pruning, strict fields, RE2
patterns, field paths); reasons a person can act on. test_crd.py checks the same reader
against an independent translation of the schema, on every field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mt5fleet.operator.core import admission, models
from mt5fleet.operator.core.models import SpecError


def minimal_spec(**changes: Any) -> dict[str, Any]:
    spec = {"userId": "alice", "tier": "pro",
            "broker": {"name": "IC Markets", "server": "ICMarketsSC-Demo"},
            "account": {"login": 51234567, "passwordSecretRef": {"name": "alice-mt5"}},
            "symbols": {"trading": ["EURUSD", "GBPUSD"]}}
    spec.update(changes)
    return spec


def problems(spec: Any) -> list[str]:
    with pytest.raises(SpecError) as refused:
        admission.parse_spec(spec)
    return refused.value.problems


def at(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return spec


# ---------------------------------------------------------------------- the API server's defaulting
def test_defaults_are_applied_as_the_api_server_applies_them() -> None:
    admitted = admission.admitted_spec(minimal_spec())
    assert admitted["risk"] == models.to_mapping(models.RiskSpec())  # risk: {} then each risk default
    assert admitted["preferences"]["sizingMode"] == "riskPercent" and admitted["paused"] is False
    assert admitted["broker"]["accountType"] == "demo" and admitted["broker"]["symbolMap"] == {}
    assert admitted["account"]["passwordSecretRef"]["key"] == "password"
    assert admitted["symbols"]["monitoring"] == []
    assert admission.parse_spec(minimal_spec()) == models.from_mapping(models.TradingClientSpec, admitted)


def test_a_null_field_is_pruned_then_defaulted_and_a_null_required_field_is_missing() -> None:
    spec = admission.parse_spec(minimal_spec(risk=None, paused=None,
                                             symbols={"trading": ["EURUSD"], "monitoring": None}))
    assert spec.risk == models.RiskSpec() and spec.paused is False and spec.symbols.monitoring == ()
    assert problems(minimal_spec(tier=None)) == ["spec.tier: required"]


def test_a_missing_or_empty_spec_names_every_required_field() -> None:
    with pytest.raises(SpecError) as refused:
        admission.parse_resource({"kind": models.KIND, "metadata": {"name": "x"}})
    assert refused.value.problems == [f"spec.{name}: required"
                                      for name in ("userId", "tier", "broker", "account", "symbols")]
    assert problems([]) == ["spec: expected an object, got a list of 0"]


# ---------------------------------------------------------------------- strict fields, RE2 patterns
def test_unknown_fields_are_refused_where_they_are() -> None:
    spec = at(minimal_spec(bogus=1), "risk.maxLeverage", 30)
    assert sorted(problems(spec)) == ["spec.bogus: unknown field", "spec.risk.maxLeverage: unknown field"]


@pytest.mark.parametrize("path, value", [("userId", "alice\n"), ("symbols.trading", ["EURUSD\n"]),
                                         ("tier", "pro\n")])
def test_a_pattern_anchors_at_the_very_end_as_in_go(path: str, value: Any) -> None:
    # Python's $ also matches before a final newline; Kubernetes' RE2 does not.
    assert len(problems(at(minimal_spec(), path, value))) == 1


# ---------------------------------------------------------------------- reasons
@pytest.mark.parametrize("path, value, problem", [
    ("userId", "Alice_1", 'spec.userId: "Alice_1" is not a DNS label (lower-case letters, digits and \'-\', '
                          "starting and ending with a letter or digit)"),
    ("risk.maxRiskPerTrade", -1, "spec.risk.maxRiskPerTrade: must be > 0, got -1"),
    ("risk.maxDailyLoss", -50, "spec.risk.maxDailyLoss: must be >= 0, got -50"),
    ("risk.maxDrawdown", 2, "spec.risk.maxDrawdown: must be <= 1, got 2"),
    ("account.login", 1.5, "spec.account.login: expected an integer, got 1.5"),
    ("paused", "yes", 'spec.paused: expected true or false, got "yes"'),
    ("broker.accountType", "paper", 'spec.broker.accountType: must be one of demo, live, got "paper"'),
    ("broker.name", "", "spec.broker.name: must not be empty"),
    ("broker.server", "S" * 129, "spec.broker.server: must be at most 128 characters, got 129"),
    ("broker.symbolMap", {"EURUSD": 5}, "spec.broker.symbolMap[EURUSD]: expected a string, got 5"),
    ("symbols.trading", [], "spec.symbols.trading: must have at least 1 item, got 0"),
    ("symbols.trading", ["EURUSD", "eurusd"],
     'spec.symbols.trading[1]: "eurusd" is not a canonical symbol (like EURUSD)'),
    ("risk", "strict", 'spec.risk: expected an object, got "strict"'),
])
def test_each_problem_names_its_field_and_reads_well(path: str, value: Any, problem: str) -> None:
    assert problems(at(minimal_spec(), path, value)) == [problem]


def test_every_problem_is_listed_at_once() -> None:
    spec = at(at(minimal_spec(userId="Alice"), "risk.maxLot", -1), "preferences.sizingMode", "martingale")
    assert [p.split(":")[0] for p in problems(spec)] == [
        "spec.userId", "spec.risk.maxLot", "spec.preferences.sizingMode"]


# ---------------------------------------------------------------------- CEL rules
@pytest.mark.parametrize("symbols, risk, problem", [
    ({"trading": ["EURUSD", "GBPUSD"], "monitoring": ["USDCHF", "GBPUSD"]}, {},
     "spec.symbols.monitoring: GBPUSD already traded; monitoring symbols must not repeat trading symbols"),
    ({"trading": ["EURUSD", "GBPUSD", "EURUSD"]}, {}, "spec.symbols.trading: trading symbols must not repeat"),
    ({"trading": ["EURUSD"]}, {"allowedSymbols": ["AUDCAD"]},
     "spec.risk.allowedSymbols: risk.allowedSymbols must include at least one trading symbol"),
])
def test_a_broken_rule_is_named_at_its_field_path(symbols: dict[str, Any], risk: dict[str, Any],
                                                  problem: str) -> None:
    assert problems(minimal_spec(symbols=symbols, risk=risk)) == [problem]


def test_rules_see_only_a_body_the_schema_accepts() -> None:
    spec = minimal_spec(userId="Alice", symbols={"trading": ["EURUSD", "EURUSD"]})
    assert [p.split(":")[0] for p in problems(spec)] == ["spec.userId"]


def test_a_body_the_api_server_admitted_skips_the_rules_but_not_the_schema() -> None:
    # kopf's bodies: the API server evaluated the CEL rules; the schema still guards a stale CRD.
    repeated = minimal_spec(symbols={"trading": ["EURUSD", "GBPUSD", "EURUSD"]})
    assert admission.parse_spec(repeated, rules=False).symbols.trading == ("EURUSD", "GBPUSD", "EURUSD")
    with pytest.raises(SpecError, match="trading symbols must not repeat"):
        admission.parse_spec(repeated)  # the same body in local mode, where no API server ran them
    with pytest.raises(SpecError, match="spec.userId"):
        admission.parse_spec(minimal_spec(userId="Alice"), rules=False)


def test_a_rule_is_evaluated_with_kubernetes_fallbacks() -> None:
    schema = {"type": "object", "x-kubernetes-validations": [
        {"rule": "self.a > 1", "message": "a must exceed 1", "messageExpression": "self.nothing + 'x'",
         "fieldPath": ".a"},                                   # a failing messageExpression: the message
        {"rule": "self.a > 2"},                                # no message: the rule is quoted
        {"rule": "self.nothing > 1", "fieldPath": ".a"},       # an evaluation error is reported, not raised
    ]}
    reported = list(admission.cel_problems(schema, {"a": 1}, "spec"))
    assert reported[:2] == ["spec.a: a must exceed 1", "spec: failed rule: self.a > 2"]
    assert reported[2].startswith("spec.a: rule 'self.nothing > 1' could not be evaluated")


# ---------------------------------------------------------------------- resources, status, memo
def test_a_resource_needs_its_kind_and_name() -> None:
    with pytest.raises(SpecError, match="kind: expected TradingClient"):
        admission.parse_resource({"kind": "Secret", "metadata": {"name": "x"}, "spec": minimal_spec()})
    with pytest.raises(SpecError, match="metadata.name: missing"):
        admission.parse_resource({"kind": models.KIND, "metadata": {}, "spec": minimal_spec()})
    client = admission.parse_resource({"kind": models.KIND, "metadata": {"name": "alice"}, "spec": minimal_spec()})
    assert (client.namespace, client.generation, client.key) == ("default", 1, "default/alice")


def test_an_accepted_spec_is_checked_once_a_refused_one_every_time() -> None:
    spec = minimal_spec(userId="memo")
    assert admission.parse_spec(spec) is admission.parse_spec(copy.deepcopy(spec))
    bad = minimal_spec(userId="Memo")
    assert problems(bad) == problems(bad)


def test_kopf_mapping_views_are_read_and_remembered_as_dicts_are() -> None:
    import kopf
    body = kopf.Body({"kind": models.KIND, "metadata": {"name": "views"}, "spec": minimal_spec(userId="views"),
                      "status": {"phase": "Ready", "observedGeneration": 1}})
    assert admission.parse_resource(body).spec is admission.parse_spec(minimal_spec(userId="views"))
    assert admission.parse_status(body.status).phase == "Ready"


@pytest.mark.parametrize("body", [None, {}, {"phase": "Sideways"}, {"observedGeneration": "2"},
                                  {"phase": "Ready", "kopf": {"progress": {}}}])
def test_an_unreadable_status_counts_as_none(body: Any) -> None:
    assert admission.parse_status(body) == models.TradingClientStatus()


def test_a_status_reads_back_as_written() -> None:
    condition = models.Condition(type="Ready", status="True", reason="Reconciled",
                                 last_transition_time="2026-01-05T09:00:00Z", observed_generation=2)
    status = models.TradingClientStatus(phase="Ready", observed_generation=2, conditions=(condition,),
                                        subjects={"commands": "cmd.alice"}, latency_ms=3)
    assert admission.parse_status(models.to_mapping(status)) == status

"""The chart's alert and recording rules (deploy/helm/mt5fleet/files/alerts/):

* ``promtool check rules`` accepts the file and ``promtool test rules`` proves, on synthetic
  series, that each alert fires when it should and stays quiet when it should not;
* every alert has a severity, a summary, a description and a runbook anchor that exists in
  docs/operations.md;
* every metric the rules query is one the project's components really export: their real
  metric classes are populated and rendered with ``generate_latest``, served to a real
  Prometheus (Debian's ``prometheus`` package, the same .deb as promtool), and every
  selector of every rule must find a series there (name, label names and label values).

promtool and the real Prometheus: tests/monitoring_lab.py.
"""

from __future__ import annotations

import re

import yaml
from monitoring_lab import (
    OPERATIONS,
    RULE_TESTS,
    RULES,
    exposition,
    lab,
    promtool,
    rules,
    selectors,
    unknown_metrics,
)


def test_promtool_accepts_the_rules():
    got = promtool("check", "rules", str(RULES))
    assert got.returncode == 0, got.stdout + got.stderr


def test_each_alert_fires_on_a_synthetic_series_and_stays_quiet_otherwise():
    assert RULE_TESTS, "no promtool unit tests"
    got = promtool("test", "rules", *(p.name for p in RULE_TESTS), cwd=RULE_TESTS[0].parent)
    assert got.returncode == 0, got.stdout + got.stderr


def test_every_alert_is_unit_tested_both_ways():
    fired, quiet = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts - fired == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+\s+(.*)$", markdown, flags=re.M)}


def test_every_alert_says_how_bad_what_and_where_the_runbook_is():
    anchors = _anchors(OPERATIONS.read_text())
    instant = {"Mt5fleetStopOut"}   # an event: it fires when it happens
    for rule in rules():
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert name in instant or "for" in rule, f"{name} has no `for`"
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor in anchors, f"{name}: runbook anchor #{anchor} missing"


def test_every_metric_the_rules_query_is_exported():
    exprs = {rule.get("alert") or rule["record"]: rule["expr"] for rule in rules()}
    assert unknown_metrics(exprs, exposition()) == []


def test_every_selector_of_the_rules_finds_a_series_in_a_real_prometheus():
    """Each selector of every rule, asked of Prometheus scraping the real exposition: a wrong
    metric name, label name or label value finds nothing."""
    with lab() as prom:
        empty = []
        for rule in rules():
            for selector in selectors(rule["expr"]):
                if not prom.query(selector):
                    empty.append(f"{rule.get('alert') or rule['record']}: {selector}")
            prom.query(rule["expr"])  # evaluates without error
        firing = {a["metric"]["alertname"] for a in prom.query("ALERTS")}
    assert empty == []
    # The lab's fleet is healthy apart from one silent agent (bob), a stop-out and the
    # reconcile errors every scrape adds: those alerts are pending or firing, no other.
    assert {"Mt5fleetAgentDisconnected", "Mt5fleetStopOut"} <= firing
    # The lab sets every gauge to 1: its operator counts one broker mismatch (pending, 10 min).
    assert firing <= {"Mt5fleetAgentDisconnected", "Mt5fleetStopOut", "Mt5fleetOperatorReconcileErrors",
                      "Mt5fleetBrokerMismatch"}, firing

"""The chart's Grafana dashboards (deploy/helm/mt5fleet/files/dashboards/*.json): a sound JSON
model (schemaVersion 39+, uid, tag mt5fleet, the `${datasource}` variable everywhere, unique
panel ids, a grid position each), every query evaluated by a real Prometheus scraping the
components' real exposition and finding data, and every metric a component exports shown
on some dashboard. Helpers: tests/test_monitoring_rules.py."""

from __future__ import annotations

import json

import pytest
from test_monitoring_rules import (
    DASHBOARDS,
    EXTERNAL,
    PENDING,
    QueryError,
    exposition,
    families,
    lab,
    rules,
    selectors,
    substitute,
    unknown_metrics,
)

DS = {"type": "prometheus", "uid": "${datasource}"}


def _boards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARDS}


def _panels(board: dict) -> list[dict]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))   # collapsed rows keep theirs inside
    return out


def _exprs() -> dict[str, str]:
    return {f"{name} / {panel['title']} / {target['refId']}": target["expr"]
            for name, board in _boards().items() for panel in _panels(board) for target in panel.get("targets", [])}


def test_the_four_dashboards_are_there():
    assert {b["uid"] for b in _boards().values()} == {"mt5fleet-fleet-overview", "mt5fleet-user", "mt5fleet-workers",
                                                       "mt5fleet-operator"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_model(path):
    board = json.loads(path.read_text())
    assert board["schemaVersion"] >= 39 and board["uid"] and board["title"]
    assert "mt5fleet" in board["tags"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in _panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells = set()
    for panel in _panels(board):
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):     # no two panels overlap
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DS and target["expr"].strip(), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DS


def test_the_user_dashboard_is_templated_on_user():
    board = _boards()["mt5fleet-user.json"]
    user = {v["name"]: v for v in board["templating"]["list"]}["user"]
    assert "user_id" in user["definition"]
    assert all("$user" in t["expr"] for p in _panels(board) for t in p.get("targets", []))


def test_every_metric_the_dashboards_query_is_exported():
    assert unknown_metrics(_exprs(), exposition()) == []


def test_every_exported_metric_is_shown_on_a_dashboard():
    shown = {s.split("{", 1)[0].strip() for expr in _exprs().values() for s in selectors(expr)}
    for rule in rules():   # a recorded series shown shows what it is computed from
        if rule.get("record") in shown:
            shown |= {s.split("{", 1)[0].strip() for s in selectors(rule["expr"])}
    unshown = [family for family, samples in families().items() if not samples & shown]
    assert unshown == [], "exported, on no dashboard"
    assert set(EXTERNAL) <= shown, "NATS exporter series fetched for nothing"
    assert PENDING <= shown


def test_every_dashboard_query_finds_data_in_a_real_prometheus():
    """Prometheus scraping the real exposition (and the rules' recorded series) evaluates each
    panel's query: a parse error, a wrong metric, label name or label value fails."""
    failed = []
    with lab() as prom:
        for where, expr in _exprs().items():
            try:
                if not prom.query(substitute(expr)):
                    failed.append(f"{where}: no data: {expr}")
            except QueryError as exc:
                failed.append(f"{where}: {exc}: {expr}")
        for board in _boards().values():
            for variable in board["templating"]["list"]:
                if variable["type"] == "query":   # label_values(metric, label): the metric has that label
                    metric, label = variable["definition"].removeprefix("label_values(").rstrip(")").split(", ")
                    values = {r["metric"].get(label) for r in prom.query(metric)}
                    assert "alice" in values, variable["definition"]
    assert failed == []

"""The status page's chart history survives an agent restart (issue 16): kept in the data
folder (``charts.json``), written atomically, bounded; a file that cannot be used is
reported (log, page), counted (``mt5fleet_agent_chart_history_unusable``), moved aside and
ignored: the agent runs on with empty charts.

* the snapshot's rules, pure (core.history);
* the file, on a real disk (adapters.chart_file);
* a real agent (simulated terminal, real nats-server) restarted on its data folder.
"""

from __future__ import annotations

import json
import math

import pytest
from agent_harness import AgentHarness
from waiting import wait_for

from mt5fleet.client.adapters import chart_file
from mt5fleet.client.adapters.disk import DiskUnavailable
from mt5fleet.client.adapters.status_page import render
from mt5fleet.client.app.status_view import agent_status
from mt5fleet.client.core.history import MAX_SNAPSHOT_SYMBOLS, ChartHistory, HistoryFormatError

T0 = 1_763_000_000_000


def _history(symbols: tuple[str, ...] = ("EURUSD", "GBPUSD"), samples: int = 20) -> ChartHistory:
    charts = ChartHistory(account_capacity=50, market_capacity=30)
    for i in range(samples):
        t = T0 + i * 2_000
        charts.record_account(t, balance=10_000.0, equity=10_000.0 + i)
        for n, symbol in enumerate(symbols):
            charts.record_market(symbol, t, {"bid": 1.08 + n + i * 1e-5, "ask": 1.0801 + n + i * 1e-5,
                                             "rsi": None if i < 14 else 55.0})
    return charts


# ---------------------------------------------------------------------- the snapshot, pure
def test_a_snapshot_restores_every_sample_through_json():
    charts = _history()
    snapshot = json.loads(json.dumps(charts.snapshot(), allow_nan=False))   # as the file holds it
    again = ChartHistory(account_capacity=50, market_capacity=30)
    assert again.restore(snapshot) == 20 * 3
    assert again.since({}) == charts.since({})
    assert again.since({})["EURUSD"]["rsi"][:14] == [None] * 14   # gaps stay gaps
    # New samples go after the restored ones; older or too close ones do not fold the chart.
    again.record_account(T0 + 19 * 2_000 + 500, balance=1.0, equity=1.0)
    again.record_account(T0 + 60_000, balance=10_000.0, equity=10_050.0)
    assert again.since({})["account"]["t"][-2:] == [(T0 + 38_000) / 1000, (T0 + 60_000) / 1000]


def test_restore_keeps_the_bounds_and_fields_line_up_by_name():
    snapshot = _history(samples=40).snapshot()
    small = ChartHistory(account_capacity=10, market_capacity=5)
    small.restore(snapshot)
    assert len(small.account) == 10 and len(small.markets["EURUSD"]) == 5
    assert small.since({})["account"]["equity"][-1] == 10_039.0              # the newest kept
    # A field the agent no longer has is dropped; one it gained is a gap.
    snapshot["account"] = {"fields": ["equity", "retired"], "rows": [[T0, 5.0, 7.0]]}
    fresh = ChartHistory()
    fresh.restore(snapshot)
    assert fresh.since({})["account"] == {"t": [T0 / 1000], "balance": [None], "equity": [5.0]}


def test_a_snapshot_holds_at_most_the_most_recent_symbols():
    charts = ChartHistory()
    symbols = [f"SYM{i:03d}" for i in range(MAX_SNAPSHOT_SYMBOLS + 6)]
    for i, symbol in enumerate(symbols):
        charts.record_market(symbol, T0 + i, {"bid": 1.0})
    kept = set(charts.snapshot()["markets"])
    assert len(kept) == MAX_SNAPSHOT_SYMBOLS and kept == set(symbols[6:])


@pytest.mark.parametrize(("mangle", "said"), [
    (lambda s: s.update(format="something else"), "not a chart history"),
    (lambda s: s["account"]["rows"].append([T0, "1.0", 2.0]), "not a number"),
    (lambda s: s["account"]["rows"].append([T0, math.inf, 2.0]), "not a number"),
    (lambda s: s["account"]["rows"].append([T0, 1.0]), "row 20 is not [t, 2 values]"),
    (lambda s: s["account"]["rows"].append([-5, 1.0, 2.0]), "no valid time"),
    (lambda s: s["markets"].update({"<img src=x>": s["markets"]["EURUSD"]}), "is not a symbol"),
    (lambda s: s.update(markets=[1, 2]), "markets"),
    (lambda s: s.update(account=None), "account: expected fields and rows"),
])
def test_restore_refuses_what_it_did_not_write_and_keeps_nothing_of_it(mangle, said):
    snapshot = _history().snapshot()
    mangle(snapshot)
    charts = ChartHistory()
    with pytest.raises(HistoryFormatError, match=said.replace("[", r"\[")):
        charts.restore(snapshot)
    assert len(charts.account) == 0 and charts.markets == {}     # checked whole before anything is kept


# ---------------------------------------------------------------------- the file
def test_the_file_is_replaced_atomically_and_a_refused_write_keeps_the_old_one(tmp_path):
    path = tmp_path / "charts.json"
    assert chart_file.load(path) is None                          # first start
    written = chart_file.save(path, _history().snapshot())
    assert written == path.stat().st_size and oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["charts.json"]   # no temporary left
    before = path.read_bytes()
    (tmp_path / ".charts.json.tmp").mkdir()                       # the temporary cannot be written
    with pytest.raises(DiskUnavailable, match="chart history"):
        chart_file.save(path, _history(samples=3).snapshot())
    assert path.read_bytes() == before


def test_a_torn_or_oversized_file_is_unusable_and_moved_aside(tmp_path, monkeypatch):
    path = tmp_path / "charts.json"
    chart_file.save(path, _history().snapshot())
    path.write_bytes(path.read_bytes()[:-40])                    # torn mid-write by something else
    with pytest.raises(chart_file.ChartFileUnusable, match="not JSON") as caught:
        chart_file.load(path)
    assert caught.value.moved_to == tmp_path / "charts.json.corrupt" and not path.exists()
    chart_file.save(path, _history().snapshot())
    monkeypatch.setattr(chart_file, "MAX_BYTES", 100)
    with pytest.raises(chart_file.ChartFileUnusable, match="more than 100"):
        chart_file.load(path)


# ---------------------------------------------------------------------- a real agent
async def test_the_charts_survive_a_restart_and_a_corrupt_file_is_reported_and_ignored(fresh_nats_server,
                                                                                     tmp_path, caplog):
    async with AgentHarness(fresh_nats_server, tmp_path) as h:
        charts = h.agent.streams.charts
        await wait_for(lambda: len(charts.account) >= 2 and len(charts.markets.get("EURUSD", ())) >= 3,
                       "account and EURUSD samples on the charts")
        await h.agent.stop()                                      # saves on the way out
        before = charts.since({})
        assert h.settings.charts_path.exists()

        await h.start_agent()                                     # the same data folder
        restored = h.agent.streams.charts.since({})
        for series in ("account", "EURUSD"):
            n = len(before[series]["t"])
            assert {k: v[:n] for k, v in restored[series].items()} == before[series], series
        assert h.agent.metrics.chart_history_unusable._value.get() == 0
        await wait_for(lambda: len(h.agent.streams.charts.account) > len(before["account"]["t"]),
                       "new account samples after the restored ones")

        await h.agent.stop()
        h.settings.charts_path.write_bytes(b'{"format": "mt5fleet-chart-history/1", "account": {"fie')
        caplog.clear()
        await h.start_agent()                                     # runs on, charts empty, said and counted
        agent = h.agent
        assert agent.metrics.chart_history_unusable._value.get() == 1
        assert len(agent.streams.charts.account) <= 1 and agent.nc.is_connected
        assert any("chart history" in r.getMessage() and "unusable" in r.getMessage() for r in caplog.records)
        page = render(agent_status(agent))
        assert "is unusable (not JSON" in page and "charts.json.corrupt" in page
        assert (h.settings.charts_path.parent / "charts.json.corrupt").exists()
        command = h.command()                                     # and it trades as ever
        await h.send(command)
        assert (await h.report(command.command_id)).fill_price > 0

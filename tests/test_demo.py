"""``mt5fleet demo``: its pure pieces, then the real command as a process (stdout not a
terminal, so it prints progress lines and a summary): a full short run, and Ctrl-C."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from mt5fleet.client.sim.broker import BROKERS
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.launcher.demo import users as demo_users
from mt5fleet.launcher.demo.feed import SignalFactory
from mt5fleet.launcher.demo.view import DemoStats, Endpoint, UserRow, percentile, render, summary
from mt5fleet.operator.core.admission import parse_resource
from mt5fleet.operator.core.nats_jwt import NKey, decode_user, parse_creds
from mt5fleet.proto.domain import sessions
from mt5fleet.proto.v1 import commands_pb2, execution_pb2
from mt5fleet.proto.validation import check_signal

NEW_YORK = sessions.NEW_YORK
REPORT = execution_pb2.ExecutionReport


# ---------------------------------------------------------------------- pure pieces
def test_each_demo_broker_server_maps_to_its_simulated_preset():
    assert {server: demo_users.broker_preset(server) for server in
            ("ICMarketsSC-Demo", "Exness-MT5Trial", "FBS-Real", "EuroRetail-Live")} == {
        "ICMarketsSC-Demo": "icm-raw", "Exness-MT5Trial": "exness-m", "FBS-Real": "fbs-cent",
        "EuroRetail-Live": "eu-netting"}
    with pytest.raises(ValueError, match="no simulated broker for server 'Nowhere-Live'"):
        demo_users.broker_preset("Nowhere-Live")
    clients = demo_users.read_clients(demo_users.examples_folder())
    assert [c.spec.user_id for c in clients] == ["alice", "bob", "carol", "dave"]
    for client in clients:  # the examples' logins are the presets' own
        assert BROKERS[demo_users.broker_preset(client.spec.broker.server)].login == client.spec.account.login


@pytest.mark.parametrize(("now", "expected"), [
    (dt.datetime(2026, 11, 21, 3, 0, tzinfo=dt.UTC), dt.datetime(2026, 11, 20, 10, 0)),   # Saturday: Friday
    (dt.datetime(2026, 11, 22, 23, 0, tzinfo=dt.UTC), dt.datetime(2026, 11, 20, 10, 0)),  # Sunday evening NY
    (dt.datetime(2026, 11, 18, 3, 0, tzinfo=dt.UTC), dt.datetime(2026, 11, 17, 10, 0)),   # Tuesday night in NY
    (dt.datetime(2026, 7, 15, 20, 0, tzinfo=dt.UTC), dt.datetime(2026, 7, 15, 10, 0)),    # Wednesday, summer time
])
def test_the_market_clock_starts_on_a_weekday_morning_in_new_york(now, expected):
    start = demo_users.market_clock_start(now)
    assert dt.datetime.fromtimestamp(start, NEW_YORK).replace(tzinfo=None) == expected
    state = sessions.market_state(int(start * 1000))
    assert state.is_open and not state.in_rollover


def test_generated_users_are_valid_and_mix_tiers_and_brokers(tmp_path):
    generated = [demo_users.generated_user(index) for index in range(5, 13)]
    clients = [parse_resource(client) for client, _ in generated]
    assert [c.spec.user_id for c in clients] == [f"user{i:03d}" for i in range(5, 13)]
    assert {c.spec.tier for c in clients} == {"free", "pro", "enterprise"}
    assert {demo_users.broker_preset(c.spec.broker.server) for c in clients} == set(BROKERS)
    assert len({c.spec.account.login for c in clients}) == len(clients)
    for client, (_, secret) in zip(clients, generated, strict=True):
        assert secret["metadata"]["name"] == client.spec.account.password_secret_ref.name
        assert secret["stringData"]["password"]
    demo_users.prepare_clients(tmp_path / "six", 6, demo_users.examples_folder())
    assert [c.spec.user_id for c in demo_users.read_clients(tmp_path / "six")] == [
        "alice", "bob", "carol", "dave", "user005", "user006"]
    demo_users.prepare_clients(tmp_path / "two", 2, demo_users.examples_folder())
    assert [c.spec.user_id for c in demo_users.read_clients(tmp_path / "two")] == ["alice", "bob"]


def test_the_signal_feed_makes_valid_opens_and_closes_of_earlier_opens():
    feed = ReferenceFeed(seed=1)
    factory = SignalFactory(feed, run_id="t1")
    now = int(demo_users.market_clock_start(dt.datetime(2026, 11, 18, tzinfo=dt.UTC)) * 1000)
    signals = [factory.next_signal(now + i * 3000) for i in range(40)]
    opened = set()
    for message in signals:
        checked = check_signal(message, message.created_at)  # valid, or ValidationError
        if message.action == commands_pb2.OPEN_POSITION:
            opened.add(message.signal_id)
            buy = message.order_type == commands_pb2.BUY
            assert checked.entry == (message.reference_ask if buy else message.reference_bid)
            assert (message.stop_loss < message.entry) == buy and message.expires_at > message.created_at
        else:
            assert message.target_signal_id in opened
            opened.discard(message.target_signal_id)
    actions = Counter(m.action for m in signals)
    assert actions[commands_pb2.OPEN_POSITION] > actions[commands_pb2.CLOSE_POSITION] > 0
    assert len({m.signal_id for m in signals}) == len(signals)


def test_percentiles_are_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([7], 99) == 7
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50, 99, 100)
    assert percentile([30, 10, 20], 50) == 20


def _fed_stats() -> DemoStats:
    stats = DemoStats(users=2, duration_s=45, signals_per_minute=20, log_file="/run/demo.log", run_dir="/run")
    feed = ReferenceFeed(seed=1)
    factory = SignalFactory(feed, run_id="t2")
    opening = factory.next_signal(1_763_650_800_000)
    stats.on_signal(opening, 5)
    stats.on_signal(opening, 5)  # seen twice (live and caught up): counted once
    for user, entry in (("alice", 1.08012), ("bob", 1.08015)):
        stats.on_command(commands_pb2.TradingCommand(
            command_id=f"c-{user}", user_id=user, signal_id=opening.signal_id, symbol="EURUSD",
            entry_price=entry, price_adjustment=entry - 1.08010, lot_size=0.3,
            adjustment_reason="market BUY at broker ask"), 5)
    created = opening.created_at
    stats.on_execution(REPORT(command_id="c-alice", user_id="alice", status=execution_pb2.EXECUTION_STATUS_FILLED,
                              fill_price=1.08013, slippage_points=1.0, signal_created_at=created,
                              received_at=created + 20, executed_at=created + 70))
    stats.on_execution(REPORT(command_id="c-alice", user_id="alice", status=execution_pb2.EXECUTION_STATUS_DUPLICATE))
    stats.on_execution(REPORT(command_id="c-bob", user_id="bob", status=execution_pb2.EXECUTION_STATUS_REJECTED,
                              retcode=10004, reason="requote", signal_created_at=created, received_at=created + 30))
    stats.on_skip(opening.signal_id, "carol", "symbol_not_traded")
    stats.operator = [UserRow("alice", "free", "exness-m", "Ready", True, "within the limits of tier free",
                              "Heartbeating")]
    stats.endpoints = [Endpoint("operator", "http://127.0.0.1:1/metrics"),
                       Endpoint("agent alice", "http://127.0.0.1:2/metrics", status="http://127.0.0.1:3/")]
    return stats


def test_stats_count_commands_fills_refusals_skips_and_latencies():
    stats = _fed_stats()
    assert len(stats.signals) == 1 and stats.commands == 2
    assert stats.by_command["c-bob"].adjustment_points == 5.0
    assert stats.fills == 1 and stats.fills_per_user == Counter(alice=1)
    assert stats.refusals == Counter(broker_requote=1) and stats.skips == Counter(symbol_not_traded=1)
    assert stats.to_received_ms == [20, 30] and stats.to_fill_ms == [70] and stats.slippage == [1.0]
    stats.on_execution(REPORT(command_id="c-x", user_id="bob", status=execution_pb2.EXECUTION_STATUS_REJECTED))
    assert stats.refusals == Counter(broker_requote=1)  # not a command of this run


def test_summary_and_live_view_render_the_stats():
    stats = _fed_stats()
    text = summary(stats, ["alice", "bob"])
    assert "signals: 1 (1 opens, 0 closes)" in text
    assert "commands per user: alice 1 (1 filled, 0 refused), bob 1 (0 filled, 1 refused)" in text
    assert "fills: 1" in text and "rejections by reason: broker_requote 1" in text
    assert "skips by reason: symbol_not_traded 1" in text
    assert "latency signal->command received: p50 20 ms, p99 30 ms" in text
    assert "latency signal->fill: p50 70 ms, p99 70 ms" in text
    assert "logs: /run/demo.log" in text and "run folder: /run" in text
    console = Console(record=True, width=160, color_system=None)
    console.print(render(stats))
    screen = console.export_text()
    for expected in ("simulated market clock", "market BUY at broker ask", "refused: broker_requote",
                     "within the limits of tier free", "http://127.0.0.1:3/", "symbol_not_traded"):
        assert expected in screen


# ---------------------------------------------------------------------- the command
def _command(run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mt5fleet.launcher.cli", "demo", "--run-dir", str(run_dir), *args]


def _figure(text: str, label: str) -> int:
    match = re.search(rf"^{label}: (\d+)", text, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{text}"
    return int(match.group(1))


@pytest.mark.slow
def test_the_demo_runs_the_platform_and_summarises_it(tmp_path):
    result = subprocess.run(_command(tmp_path / "run", "--users", "6", "--duration", "20",
                                     "--signals-per-minute", "60"),
                            capture_output=True, text=True, timeout=90, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert "running: signals" in result.stdout  # progress lines, not the live view
    assert _figure(result.stdout, "signals") > 0 and _figure(result.stdout, "fills") > 0
    per_user = dict(re.findall(r"(\w+) (\d+) \(\d+ filled", re.search(r"^commands per user: (.*)$",
                                                                     result.stdout, re.MULTILINE).group(1)))
    assert set(per_user) == {"alice", "bob", "carol", "dave", "user005", "user006"}
    assert all(int(count) > 0 for count in per_user.values()), per_user  # all trade EURUSD
    assert re.search(r"^skips by reason: \w+ \d+", result.stdout, re.MULTILINE)
    assert re.search(r"^latency signal->command received: p50 \d+ ms, p99 \d+ ms$", result.stdout, re.MULTILINE)
    assert re.search(r"^latency signal->fill: p50 \d+ ms, p99 \d+ ms$", result.stdout, re.MULTILINE)
    assert (tmp_path / "run" / "demo.log").stat().st_size > 0
    assert (tmp_path / "run" / "clients" / "carol-pro-over-limit.yaml.status.yaml").exists()
    _assert_one_account_per_tenant(tmp_path / "run" / "operator" / "secrets", set(per_user))


def _assert_one_account_per_tenant(secrets: Path, users: set[str]) -> None:
    """Each agent traded as a user of its own tenant account, none in the platform's."""
    accounts = {}
    for user in users:
        jwt, _ = parse_creds((secrets / f"mt5fleet-agent-{user}" / "user.creds").read_text())
        accounts[user] = decode_user(jwt).claims.issuer_account
        state = json.loads((secrets / f"mt5fleet-nats-tenant-{user}" / "tenant.json").read_text())
        assert NKey.from_seed(state["account"]).public_key == accounts[user]
    assert len(set(accounts.values())) == len(users)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_ctrl_c_stops_everything_cleanly_with_a_summary(tmp_path):
    process = subprocess.Popen(_command(tmp_path / "run", "--signals-per-minute", "60"), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines = []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "the demo ended before its first signal:\n" + "".join(lines)
            lines.append(line)
            if re.search(r"running: signals [1-9]", line):
                break
        servers = [pid for pid in _children(process.pid) if Path(f"/proc/{pid}/comm").read_text().strip()
                   == "nats-server"]
        assert servers, "no nats-server child process"
        process.send_signal(signal.SIGINT)
        stopped_at = time.monotonic()
        rest, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert time.monotonic() - stopped_at < 10
    assert "Traceback" not in output
    assert _figure(rest, "signals") > 0 and "mt5fleet demo summary" in rest
    assert f"run folder: {tmp_path / 'run'}" in rest
    for pid in servers:
        assert not _running(pid), f"nats-server {pid} still running"
    assert (tmp_path / "run" / "nats-server.log").exists()  # the run folder stays, with the logs

"""``mt5fleet audit`` as a user runs it, against a real nats-server after a small real run:
a signal through the real adjustment worker (decision records written), then an execution
report on alice's executions subject as her agent would send it. The command shows the
reference vs the adjusted entry, the lot and why, the fill and its slippage, or the skip
and its reason; ``--json`` gives the same for a machine."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys

import pytest
from decision_fleet import commands_of, now_ms, running_fleet, settled
from factories import fleet_signal
from waiting import wait_for

from mt5fleet.proto import subjects
from mt5fleet.proto.v1 import commands_pb2, execution_pb2

FILL = 1.10015  # alice's broker ask was 1.10013: 2 points worse; the reference ask 1.10002: 13 points


async def audit(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mt5fleet.launcher.cli", "audit", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


def fill_of(command: commands_pb2.TradingCommand) -> execution_pb2.ExecutionReport:
    return execution_pb2.ExecutionReport(
        command_id=command.command_id, user_id=command.user_id, status=execution_pb2.EXECUTION_STATUS_FILLED,
        retcode=10009, ticket=880001, fill_price=FILL, filled_volume=command.lot_size, slippage_points=2.0,
        received_at=now_ms(), executed_at=now_ms() + 40, symbol="EURUSD", command_type=command.type,
        order_type=command.order_type, signal_id=command.signal_id, requested_price=command.entry_price,
        reference_price=command.reference_price, slippage_reference_points=13.0, sequence=1)


@pytest.fixture
async def run(fresh_nats_server):
    """The run: signal sig-a decided for the four users, alice's command filled."""
    async with running_fleet(fresh_nats_server.url) as (js, worker):
        await js.publish(subjects.signal_subject("EURUSD"), fleet_signal("sig-a", now_ms()).SerializeToString(),
                         headers={"Nats-Msg-Id": "sig-a"})
        await wait_for(lambda: settled(js, worker, 1), "every partition done with the signal")
        alice = (await commands_of(js))["alice"]
        await js.publish(subjects.user_subject("alice", subjects.Channel.EXECUTIONS), fill_of(alice)
                         .SerializeToString())
        yield fresh_nats_server.url, alice


async def test_audit_of_a_signal_for_a_user_shows_entries_lot_fill_and_slippage(run):
    url, alice = run
    code, out, err = await audit("sig-a", "--user", "alice", "--server", url)
    assert code == 0, err
    print(out)  # what a user reads: kept in the test log
    assert out.startswith(f"signal sig-a -> user alice: command {alice.command_id}")
    assert "user quote   bid/ask 1.10001/1.10013 (EURUSD.m" in out
    assert "entry        reference 1.10002 -> adjusted 1.10013 (+11.0 points): market BUY at broker ask" in out
    assert re.search(rf"^  lot +{alice.lot_size:g}: .*risk 1% of equity 10000\.00", out, re.MULTILINE)
    assert (f"execution    FILLED {alice.lot_size:g} lots at 1.10015, ticket 880001, 40 ms after receipt; "
            "slippage +2.0 points vs the adjusted entry, +13.0 vs the reference") in out
    assert "account      equity 10000.00 USD" in out and "tier pro" in out
    assert "recomputed   the same output, from the record's inputs alone" in out


async def test_audit_of_a_command_id_finds_its_record_without_the_user(run):
    url, alice = run
    code, out, err = await audit(alice.command_id, "--server", url)
    assert code == 0, err
    assert out.startswith(f"signal sig-a -> user alice: command {alice.command_id}") and "FILLED" in out


async def test_audit_of_a_signal_shows_every_user_and_each_skip_with_its_reason(run):
    url, _ = run
    code, out, err = await audit("sig-a", "--server", url)
    assert code == 0, err
    assert sorted(re.findall(r"^signal sig-a -> user (\w+)", out, re.MULTILINE)) == ["alice", "bob", "carol", "dave"]
    assert "outcome      skipped: paused: the user is paused" in out
    assert re.search(r"outcome +skipped: wide_spread: EURUSD spread is 12 points, the maximum is 5", out)
    # dave's JPY account: the rate that converted his tick value, and the quote it came from
    assert re.search(r"^  conversion +1 USD = 149\.5\d* JPY \(USDJPY (bid|ask), \d+ ms old\)$", out, re.MULTILINE)


async def test_audit_json_is_for_machines(run):
    url, alice = run
    code, out, err = await audit("sig-a", "--user", "alice", "--server", url, "--json")
    assert code == 0, err
    (row,) = json.loads(out)["decisions"]
    assert row["record"]["commands"][0]["command_id"] == alice.command_id
    assert row["executions"][0]["status"] == "EXECUTION_STATUS_FILLED"
    fill = row["fills"][0]
    assert (fill["adjusted_entry"], fill["reference_entry"], fill["fill_price"]) == (1.10013, 1.10002, FILL)
    assert (fill["vs_adjusted_points"], fill["vs_reference_points"]) == (2.0, 13.0)
    assert row["recomputed_matches"] is True
    code, out, err = await audit("sig-a", "--user", "carol", "--server", url, "--json")
    (carol,) = json.loads(out)["decisions"]
    assert carol["record"]["skip_reason"] == "wide_spread" and carol["executions"] == []


async def test_audit_of_an_unknown_signal_says_so_and_fails(run):
    url, _ = run
    code, out, err = await audit("sig-nope", "--user", "alice", "--server", url)
    assert code == 1 and "no decision record of user alice for 'sig-nope'" in err
    code, _, err = await audit("sig-a")
    assert code == 1 and "needs --server URL" in err


@pytest.mark.slow
def test_the_demo_ends_with_an_audit_command_that_works_on_its_run(tmp_path):
    cli = [sys.executable, "-m", "mt5fleet.launcher.cli"]
    demo = subprocess.run([*cli, "demo", "--run-dir", str(tmp_path / "run"), "--users", "2", "--duration", "6",
                           "--signals-per-minute", "60"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    example = re.search(r"^audit a decision: mt5fleet (audit .*)$", demo.stdout, re.MULTILINE)
    assert example, demo.stdout
    result = subprocess.run([*cli, *shlex.split(example.group(1))], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^  entry +reference [\d.]+ -> adjusted [\d.]+ \([+-]\d+\.\d points\)", out, re.MULTILINE)
    assert re.search(r"^  lot +\d", out, re.MULTILINE) and "execution    FILLED" in out
    assert "recomputed   the same output" in out and not result.stderr

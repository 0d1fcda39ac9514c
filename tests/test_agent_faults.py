"""The agent's fault suite (issue 12): each fault injected into real components (a real
nats-server stopped or SIGKILLed, an agent process SIGKILLed, the simulated terminal's IPC
link broken, a real filesystem filled up, a host clock 30 s off), and each test checks that
nothing was lost or duplicated: reports and account updates in JetStream, ledger rows, the
terminal's deal history."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from agent_harness import QUICK_HEALTH, AgentHarness, open_positions, opening_deals, stream_messages
from agent_process import serve_terminal, start_agent_process
from waiting import eventually, wait_for

from mt5fleet.client.adapters.execution import NothingSent
from mt5fleet.client.adapters.ledger import CommandLedger, LedgerState
from mt5fleet.client.app.commands import HoldKind
from mt5fleet.client.app.status_view import agent_status
from mt5fleet.client.core.health import Reason
from mt5fleet.client.core.mt5_constants import (
    RES_E_INTERNAL_FAIL_CONNECT,
    RES_E_INTERNAL_FAIL_RECEIVE,
    RES_E_INTERNAL_FAIL_TIMEOUT,
)
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.ids import magic_for
from mt5fleet.proto.v1 import account_pb2, commands_pb2, execution_pb2, heartbeat_pb2, prices_pb2
from mt5fleet.proto.validation import (
    check_account,
    check_command,
    check_execution,
    check_heartbeat,
    check_price_batch,
)

FILLED = execution_pb2.EXECUTION_STATUS_FILLED
EXPIRED = execution_pb2.EXECUTION_STATUS_EXPIRED


def _not_ready(h: AgentHarness) -> set[Reason]:
    return {problem.reason for problem in h.agent.health.not_ready}


def _waits_for(h: AgentHarness) -> HoldKind | None:
    blocked = h.agent.pipeline.blocked
    return blocked.kind if blocked is not None else None


async def _close_everything(h: AgentHarness) -> None:
    """Positions opened before, during and after the fault are still closable."""
    close_all = h.command(type=commands_pb2.CLOSE_ALL, symbol="", lot_size=0, entry_price=0, stop_loss=0,
                          take_profit=0)
    await h.send(close_all)
    assert (await h.report(close_all.command_id, timeout=20)).status == FILLED
    assert not open_positions(h.sim)


async def _assert_exactly_once(h: AgentHarness, executed: list[str], *, refused: tuple[str, ...] = ()) -> None:
    """One report per command in JetStream, one opening deal per executed command, every
    ledger row reported, the account updates numbered without a gap or a repeat."""
    await wait_for(lambda: h.agent.outbox.depth() == 0, "the outbox drained", timeout=30)
    counts = await eventually(h.stored_report_counts, "every report stored",
                              until=lambda c: set(executed) | set(refused) <= set(c))
    assert counts == Counter({command_id: 1 for command_id in (*executed, *refused)})
    assert opening_deals(h.sim) == Counter({magic_for(command_id): 1 for command_id in executed})
    for command_id in (*executed, *refused):
        await wait_for(lambda c=command_id: h.agent.ledger.get(c).state is LedgerState.REPORTED,
                       f"{command_id} reported")
    runs = await h.stored_account_sequences()
    assert runs and all(sequences == list(range(1, len(sequences) + 1)) for sequences in runs.values()), runs


def _integrity(*paths: Path) -> None:
    for path in paths:
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",), path


# ------------------------------------------------------------------ a. nats-server restarts

def _kill_9(server) -> None:
    """kill -9 of the nats-server process: no flush, no goodbye; then reaped."""
    pid = getattr(server, "pid", None) or server._process.pid
    os.kill(pid, signal.SIGKILL)
    server.stop()  # reaps the dead process; start() comes back on the same port and store


async def _feed(h: AgentHarness, sent: list[str], stop: asyncio.Event) -> None:
    """A command every 100 ms; each published until JetStream acknowledges it, even past
    ``stop`` (a publish whose ack was lost may be stored: it must count as sent)."""
    while not stop.is_set():
        command = h.command(lot_size=0.01)
        while True:
            try:
                await h.send(command)
                break
            except Exception:  # NATS away: the same command again, same message id
                await asyncio.sleep(0.1)
        sent.append(command.command_id)
        await asyncio.sleep(0.1)


async def _prices_stored(h: AgentHarness) -> int:
    subject = subjects.user_subject(h.user_id, subjects.Channel.PRICES)
    info = await h.js.stream_info(subjects.PRICES_STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def test_nats_server_stopped_and_killed_mid_stream_loses_and_duplicates_nothing(fresh_nats_server, tmp_path):
    server = fresh_nats_server
    async with AgentHarness(server, tmp_path, health=QUICK_HEALTH, risk={"max_open_positions": 500}) as h:
        sent: list[str] = []
        stop = asyncio.Event()
        feeder = asyncio.create_task(_feed(h, sent, stop))
        await wait_for(lambda: len(h.reports) >= 3, "commands executing")
        for outage in (server.stop, lambda: _kill_9(server)):
            outage()
            await wait_for(lambda: Reason.NATS_DISCONNECTED in _not_ready(h), "the agent says NATS is away")
            assert h.agent.health.alive  # an outage is not a reason to restart the agent
            server.start()
            before = len(sent)
            await h.rebootstrap()  # the memory streams (TC_PRICES) come back empty, or not at all
            await eventually(lambda: _prices_stored(h), "prices flowing again after the restart", retry_on=(Exception,))
            await wait_for(lambda n=before + 5: len(sent) >= n, "commands flowing again")
            await wait_for(lambda: h.agent.health.ready, lambda: f"ready again (not: {_not_ready(h)})", timeout=20)
        stop.set()
        await feeder
        await _assert_exactly_once(h, sent)
        assert h.agent.reconnects >= 2
        await _close_everything(h)


# ------------------------------------------------- b. killed between order_send and the ack

async def test_an_agent_process_killed_after_order_send_reports_the_deal_once_and_never_resends(
        fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path, start_agent=False) as h:
        address, authkey = serve_terminal(h.sim)  # the terminal outlives the agent, as terminal64.exe does
        child = await start_agent_process(h.raw_settings, address, authkey, h.clock.now(), die_after_order_send=True)
        command = h.command()
        await h.send(command)
        assert await asyncio.wait_for(child.wait(), timeout=30) == -signal.SIGKILL
        assert opening_deals(h.sim) == Counter({magic_for(command.command_id): 1})  # at the broker ...
        with CommandLedger(h.settings.ledger_path) as ledger:  # ... and only the intent on disk
            assert [e.command_id for e in ledger.in_flight()] == [command.command_id]
        assert not await h.stored_report_counts()
        _integrity(h.settings.ledger_path, h.settings.outbox_path)

        await h.start_agent()  # the same data folder and terminal: the restart after the crash
        report = await h.report(command.command_id)
        assert report.status == FILLED and "recovered" in report.reason and report.filled_volume > 0
        duplicates = h.agent.metrics.commands.labels("duplicate")
        await wait_for(lambda: duplicates._value.get() >= 1, "the catch-up copy handled as a duplicate")
        await h.send(command, msg_id="redelivered")
        await wait_for(lambda: duplicates._value.get() >= 2, "a redelivered copy handled as a duplicate")
        await _assert_exactly_once(h, [command.command_id])


# ------------------------------------------------------------- c. the terminal drops

async def test_the_terminal_drops_and_returns_commands_wait_then_run_and_an_unknown_outcome_is_read_back(
        fresh_nats_server, tmp_path, caplog):
    async with AgentHarness(fresh_nats_server, tmp_path, health=QUICK_HEALTH) as h:
        first = h.command()
        await h.send(first)
        assert (await h.report(first.command_id)).status == FILLED

        waiting = h.command()  # priced now: the test reads quotes from the terminal too
        expiring = h.command(expires_at=h.now_ms() + 3_000)
        h.sim.fail_ipc(RES_E_INTERNAL_FAIL_CONNECT)  # the terminal is gone: initialize fails too
        await wait_for(lambda: Reason.TERMINAL_DISCONNECTED in _not_ready(h), "the agent says the terminal is away")
        await h.send(waiting)
        await h.send(expiring)
        await wait_for(lambda: h.agent.pipeline.held == 2, "both commands wait for the terminal")
        status = agent_status(h.agent)
        assert status.commands_held == 2 and status.held_for.startswith("terminal:") and "-1000" in status.held_for
        refused = await h.report(expiring.command_id)  # its expiry passed while it waited: refused, saying why
        assert refused.status == EXPIRED and "waited for the terminal" in refused.reason
        assert not [r for r in h.reports if r.command_id == waiting.command_id]  # neither sent nor refused
        assert h.agent.health.alive

        h.sim.restore_ipc()  # the terminal is back: the agent reconnects by itself
        assert (await h.report(waiting.command_id)).status == FILLED
        await wait_for(lambda: h.agent.health.ready, "ready again")
        assert caplog.text.count("not ready: terminal_disconnected") == 1  # once per outage, not per look
        assert h.agent.metrics.mt5_errors.labels(str(RES_E_INTERNAL_FAIL_CONNECT))._value.get() > 0

        real_order_send = h.sim.order_send

        def sent_then_dropped(request):  # the order reaches the broker, the answer is lost with the IPC link
            real_order_send(request)
            h.sim.fail_ipc(RES_E_INTERNAL_FAIL_RECEIVE)
            return h.sim.terminal_info()  # None, and last_error() now says why

        unknown = h.command()
        h.sim.order_send = sent_then_dropped
        await h.send(unknown)
        await wait_for(lambda: h.agent.pipeline.blocked is not None, "the outcome is unknown: commands wait")
        del h.sim.order_send
        h.sim.restore_ipc()
        recovered = await h.report(unknown.command_id)
        assert recovered.status == FILLED and "recovered" in recovered.reason
        await _assert_exactly_once(h, [first.command_id, waiting.command_id, unknown.command_id],
                                   refused=(expiring.command_id,))
        await _close_everything(h)


async def test_a_terminal_dropping_before_the_order_is_sent_leaves_the_command_safe_to_run_again(
        fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path) as h:
        command = check_command(h.command(), h.now_ms())

        def drop_then_execute():  # on the MT5 thread: the very next terminal call times out
            h.sim.fail_ipc(RES_E_INTERNAL_FAIL_TIMEOUT, calls=1)
            return h.agent.executor.execute(command)

        with pytest.raises(NothingSent):
            await h.agent.mt5.run(drop_then_execute)
        assert not opening_deals(h.sim)
        ledger = h.agent.ledger
        ledger.begin("begun", magic=1, stream_seq=None, received_at_ms=1)
        assert ledger.abandon("begun") and ledger.get("begun") is None  # forgotten: it may run again
        filled = await _filled(h)
        assert not ledger.abandon(filled)  # a command with an outcome never is
        assert ledger.get(filled).state is not LedgerState.BEGUN


async def _filled(h: AgentHarness) -> str:
    command = h.command()
    await h.send(command)
    assert (await h.report(command.command_id)).status == FILLED
    return command.command_id


# ------------------------------------------------------------------- d. the disk is full

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MB tmpfs of the test's own (needs root, or CAP_SYS_ADMIN)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here (root needed): {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """Take every free byte of the filesystem: the next write that needs space fails (ENOSPC)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 14, 1 << 10, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_stops_trading_before_any_order_and_resumes_when_space_returns(
        fresh_nats_server, small_disk, tmp_path, caplog):
    async with AgentHarness(fresh_nats_server, tmp_path, health=QUICK_HEALTH,
                            data_dir=str(small_disk / "agent-alice")) as h:
        first = h.command()
        await h.send(first)
        assert (await h.report(first.command_id)).status == FILLED
        filler = _fill(small_disk)
        # The account updates of the open position are the first writes refused.
        await wait_for(lambda: Reason.STORAGE_UNWRITABLE in _not_ready(h), "the agent says it cannot write")
        blocked = h.command()
        await h.send(blocked)
        await wait_for(lambda: h.agent.pipeline.held == 1 and _waits_for(h) is HoldKind.DISK,
                       "the command waits for the disk")
        assert h.agent.ledger.get(blocked.command_id) is None  # no ledger entry, so ...
        assert opening_deals(h.sim)[magic_for(blocked.command_id)] == 0  # ... no order
        assert "database or disk is full" in caplog.text and h.agent.health.alive

        filler.unlink()  # space returns
        assert (await h.report(blocked.command_id, timeout=20)).status == FILLED
        await wait_for(lambda: h.agent.health.ready, lambda: f"ready again (not: {_not_ready(h)})")
        await _assert_exactly_once(h, [first.command_id, blocked.command_id])
        assert caplog.text.count("not ready: storage_unwritable") == 1
    _integrity(h.settings.ledger_path, h.settings.outbox_path)


# ------------------------------------------------------------------- e. host clock skew

async def _last(h: AgentHarness, stream: str, channel: subjects.Channel) -> bytes:
    return (await stream_messages(h.js, stream, subjects.user_subject(h.user_id, channel)))[-1]


@pytest.mark.parametrize("offset_s", [30.0, -30.0])
async def test_a_host_clock_30_s_off_is_measured_and_corrected(fresh_nats_server, tmp_path, offset_s):
    async with AgentHarness(fresh_nats_server, tmp_path, host_clock_offset_s=offset_s) as h:
        skew = h.agent.terminal.server_clock.skew
        await wait_for(lambda: skew.correction_ms, "the skew measured on fresh ticks")
        assert skew.measured_ms() / 1000 == pytest.approx(offset_s, abs=2)
        await wait_for(lambda: h.agent.metrics.clock_correction._value.get(), "the correction in the metrics")
        assert h.agent.metrics.clock_skew._value.get() == pytest.approx(offset_s, abs=2)
        assert agent_status(h.agent).clock.correction_s == pytest.approx(offset_s, abs=2)

        now = h.now_ms()  # the true time: the broker's and the platform's
        in_time = h.command(expires_at=now + 20_000)  # 20 s left: less than the skew
        too_late = h.command(created_at=now - 5_000, signal_created_at=now - 6_000, expires_at=now - 2_000)
        await h.send(in_time)
        await h.send(too_late)
        assert (await h.report(in_time.command_id)).status == FILLED
        assert (await h.report(too_late.command_id)).status == EXPIRED

        # What it published after the fill (so after the correction) passes the platform's own
        # checks at the true time.
        heartbeat = await eventually(lambda: _last(h, subjects.HEARTBEAT_STREAM, subjects.Channel.HEARTBEAT),
                                     "a heartbeat after the fill", retry_on=(IndexError,),
                                     until=lambda raw: heartbeat_pb2.Heartbeat.FromString(raw).commands_executed)
        check_heartbeat(heartbeat_pb2.Heartbeat.FromString(heartbeat), h.now_ms())
        account = await eventually(lambda: _last(h, subjects.ACCOUNT_STREAM, subjects.Channel.ACCOUNT),
                                   "an account update after the fill",
                                   until=lambda raw: account_pb2.AccountProfile.FromString(raw).open_positions)
        check_account(account_pb2.AccountProfile.FromString(account), h.now_ms())
        prices = prices_pb2.ClientPriceStream.FromString(await _last(h, subjects.PRICES_STREAM,
                                                                       subjects.Channel.PRICES))
        assert not check_price_batch(prices, h.now_ms()).rejected
        for report in await h.stored_reports():
            check_execution(report, h.now_ms())
            assert abs(report.received_at - now) < 10_000

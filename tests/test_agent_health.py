"""The agent's health: the pure rules (readiness budgets, liveness, transitions, clock skew)
and a real agent's /readyz and /healthz through a NATS outage and a stuck MT5 call."""

from __future__ import annotations

import logging
import threading

import aiohttp
import pytest
from agent_harness import QUICK_HEALTH, AgentHarness
from waiting import eventually, wait_for

from mt5fleet.client.adapters.status import bound_port, build_app, serve
from mt5fleet.client.app.status_view import agent_status
from mt5fleet.client.core.clock_skew import CorrectedClock, SkewTracker
from mt5fleet.client.core.health import Facts, HealthBudgets, Problem, Reason, Transitions, liveness, readiness
from mt5fleet.proto.domain.clock import ManualClock

BUDGETS = HealthBudgets()


def _reasons(problems: tuple[Problem, ...]) -> set[Reason]:
    return {p.reason for p in problems}


# ------------------------------------------------------------------------ pure rules

def test_a_working_agent_is_ready_and_alive() -> None:
    assert readiness(Facts(prices_quiet_s=1.0), BUDGETS) == () and liveness(Facts(), BUDGETS) == ()


@pytest.mark.parametrize(("facts", "reason"), [
    (Facts(prices_quiet_s=31), Reason.PRICES_NOT_PUBLISHED),
    (Facts(nats_down_s=31), Reason.NATS_DISCONNECTED),
    (Facts(terminal_down_s=31, terminal_error="initialize: -10003 IPC initialize failed"),
     Reason.TERMINAL_DISCONNECTED),
    (Facts(outbox_stalled_s=121, outbox_depth=7), Reason.OUTBOX_NOT_DRAINING),
    (Facts(catchup_failing_s=61, catchup_error="no_responders"), Reason.CATCHUP_FAILING),
    (Facts(storage_failing_s=0.001, storage_error="database or disk is full"), Reason.STORAGE_UNWRITABLE),
])
def test_each_failure_past_its_budget_is_a_reason(facts: Facts, reason: Reason) -> None:
    problems = readiness(facts, BUDGETS)
    assert _reasons(problems) == {reason} and problems[0].detail
    assert liveness(facts, BUDGETS) == ()  # none of these is a reason to restart the agent


def test_within_budget_or_with_the_market_closed_nothing_is_wrong() -> None:
    assert readiness(Facts(prices_quiet_s=29, nats_down_s=29, terminal_down_s=29, outbox_stalled_s=119,
                           catchup_failing_s=59), BUDGETS) == ()
    assert readiness(Facts(market_open=False, prices_quiet_s=3_600), BUDGETS) == ()  # no ticks at the weekend


def test_the_details_say_why() -> None:
    [problem] = readiness(Facts(outbox_stalled_s=200, outbox_depth=12), BUDGETS)
    assert problem.detail == "12 message(s) in the outbox and none stored for 200 s"
    [problem] = readiness(Facts(terminal_down_s=40, terminal_error="account_info: -10004 No IPC connection"), BUDGETS)
    assert "-10004 No IPC connection" in problem.detail


def test_only_a_wedged_agent_fails_liveness() -> None:
    assert _reasons(liveness(Facts(mt5_busy_s=301), BUDGETS)) == {Reason.MT5_THREAD_STUCK}
    assert _reasons(liveness(Facts(stopped_loops=("outbox",)), BUDGETS)) == {Reason.LOOP_STOPPED}
    assert liveness(Facts(mt5_busy_s=59, nats_down_s=10_000, terminal_down_s=10_000), BUDGETS) == ()


def test_transitions_report_each_change_once() -> None:
    transitions = Transitions()
    nats = Problem(Reason.NATS_DISCONNECTED, "away")
    assert transitions.update([nats]) == ([nats], [])
    assert transitions.update([Problem(Reason.NATS_DISCONNECTED, "away longer")]) == ([], [])
    assert transitions.update([]) == ([], [Reason.NATS_DISCONNECTED])
    assert transitions.update([]) == ([], [])


def test_a_host_clock_in_time_is_never_corrected() -> None:
    tracker = SkewTracker()
    for i, age_ms in enumerate([900, 40, 700, 300, 1_200, 80] * 5):  # tick ages only
        tracker.observe(tick_utc_ms=i * 1_000, host_ms=i * 1_000 + age_ms)
    assert tracker.correction_ms == 0 and tracker.measured_ms() == 40


def test_a_skewed_host_clock_is_measured_corrected_and_released() -> None:
    tracker = SkewTracker(window=8)
    assert not tracker.observe(0, 30_400) and not tracker.observe(1_000, 31_100)  # too few ticks yet
    assert tracker.observe(2_000, 32_050)  # the correction starts
    assert tracker.correction_ms == 30_050
    assert not tracker.observe(3_000, 33_600)  # the jitter of tick ages does not move it
    clock = CorrectedClock(ManualClock(1_000.0), tracker)
    assert clock.now() == pytest.approx(1_000.0 - 30.05)
    for i in range(4, 12):  # NTP fixed the host clock
        tracker.observe(i * 1_000, i * 1_000 + 100)
    assert tracker.correction_ms == 0 and clock.now() == 1_000.0


# ------------------------------------------------------------------------ a real agent

async def _get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_readyz_goes_red_with_the_reason_through_a_nats_outage_while_healthz_stays_green(
        fresh_nats_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mt5fleet.agent.health")
    async with AgentHarness(fresh_nats_server, tmp_path, health=QUICK_HEALTH) as h:
        runner = await serve(build_app(lambda: agent_status(h.agent), h.agent.metrics.registry), "127.0.0.1", 0)
        base = f"http://127.0.0.1:{bound_port(runner)}"
        try:
            await eventually(lambda: _get(f"{base}/readyz"), "ready", until=lambda r: r[0] == 200)
            fresh_nats_server.stop()
            status, body = await eventually(
                lambda: _get(f"{base}/readyz"), "not ready: nats_disconnected",
                until=lambda r: r[0] == 503 and "nats_disconnected" in {p["reason"] for p in r[1]["reasons"]})
            assert not body["ready"] and all(p["detail"] for p in body["reasons"])
            assert (await _get(f"{base}/healthz"))[0] == 200  # alive: it reconnects by itself
            metrics = h.agent.metrics
            assert metrics.not_ready.labels("nats_disconnected")._value.get() == 1
            assert metrics.ready._value.get() == 0
            fresh_nats_server.start()
            await h.rebootstrap()
            await eventually(lambda: _get(f"{base}/readyz"), "ready again", until=lambda r: r[0] == 200, timeout=20)
        finally:
            await runner.cleanup()
    assert metrics.not_ready.labels("nats_disconnected")._value.get() == 0
    assert metrics.not_ready_transitions.labels("nats_disconnected")._value.get() == 1
    assert caplog.text.count("not ready: nats_disconnected") == 1
    assert caplog.text.count("nats_disconnected cleared") == 1


async def test_healthz_fails_only_while_the_mt5_thread_is_stuck(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path, health=QUICK_HEALTH) as h:
        runner = await serve(build_app(lambda: agent_status(h.agent), h.agent.metrics.registry), "127.0.0.1", 0)
        base = f"http://127.0.0.1:{bound_port(runner)}"
        release = threading.Event()
        real_tick = h.sim.symbol_info_tick

        def hung_tick(symbol):  # the terminal stops answering mid-call, without an IPC error
            release.wait(timeout=30)
            return real_tick(symbol)

        try:
            assert (await _get(f"{base}/healthz"))[0] == 200
            h.sim.symbol_info_tick = hung_tick
            status, body = await eventually(lambda: _get(f"{base}/healthz"), "not alive",
                                            until=lambda r: r[0] == 503)
            assert [p["reason"] for p in body["reasons"]] == ["mt5_thread_stuck"] and not body["alive"]
            assert (await _get(f"{base}/readyz"))[0] == 503
            del h.sim.symbol_info_tick
            release.set()
            await eventually(lambda: _get(f"{base}/healthz"), "alive again", until=lambda r: r[0] == 200)
        finally:
            release.set()
            await runner.cleanup()
        await wait_for(lambda: h.agent.health.alive, "alive")

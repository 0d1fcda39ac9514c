"""The adjustment worker's view of each user (workers/adapters/fleet_state.py): the
ClientConfig read and checked once per KV change into a policy, refused configs counted and
the last good policy kept, a config stored under another user's key refused; the agent's
daily stop-out read from its execution reports, so the worker skips the user until the
agent trades again."""

from __future__ import annotations

from agent_harness import AgentHarness
from factories import NOW_MS, domain_signal
from waiting import wait_for

from mt5fleet.client.core.guard import guard_account
from mt5fleet.client.core.risk import RiskLimits
from mt5fleet.client.core.watermarks import Watermarks
from mt5fleet.proto.domain.config import SizingMode
from mt5fleet.proto.domain.ids import command_id_for, stop_out_close_all_id
from mt5fleet.proto.domain.sessions import next_trading_day_start_ms, trading_day_start_ms
from mt5fleet.proto.v1 import account_pb2, commands_pb2, config_pb2, execution_pb2
from mt5fleet.workers.adapters.fleet_state import FleetState
from mt5fleet.workers.core.adjust import Adjusted, Skip, SkipReason, adjust


def config(user_id: str = "alice", **fields: object) -> bytes:
    return config_pb2.ClientConfig(user_id=user_id, trading_symbols=["EURUSD"], **fields).SerializeToString()


def state() -> tuple[FleetState, list[tuple[str, str]]]:
    refused: list[tuple[str, str]] = []
    return FleetState(now_ms=lambda: NOW_MS, on_invalid=lambda kind, why: refused.append((kind, why))), refused


def test_a_config_becomes_a_policy_once_and_every_signal_reads_that_policy():
    fleet, refused = state()
    fleet.on_config("alice", config(preferences=account_pb2.TradingPreferences(
        sizing_mode=account_pb2.SIZING_MODE_FIXED_LOT, preferred_lot_size=0.2)))
    policy = fleet.policies["alice"]
    assert (policy.sizing_mode, policy.preferred_lot_size, policy.trading_symbols) == (
        SizingMode.FIXED_LOT, 0.2, frozenset({"EURUSD"}))
    # Not re-read per signal: each user state carries the very policy made on the change.
    assert fleet.user_state("alice").policy is policy and fleet.user_state("alice").policy is policy
    assert fleet.users() == ["alice"] and refused == []


def test_a_refused_config_is_counted_and_the_last_good_policy_kept():
    fleet, refused = state()
    fleet.on_config("alice", config(risk=account_pb2.RiskProfile(max_lot=2.0)))
    good = fleet.policies["alice"]
    fleet.on_config("alice", config(risk=account_pb2.RiskProfile(max_lot=-1.0)))
    fleet.on_config("alice", b"\xff not a protobuf")
    assert fleet.policies["alice"] is good and good.max_lot == 2.0
    assert [kind for kind, _ in refused] == ["ClientConfig", "ClientConfig"]
    assert "max_lot" in refused[0][1]


def test_a_config_under_another_users_key_is_refused():
    fleet, refused = state()
    fleet.on_config("bob", config("alice", paused=True))
    assert fleet.policies == {} and fleet.users() == []
    ((kind, why),) = refused
    assert kind == "ClientConfig" and "stored under the key of 'bob'" in why


# ------------------------------------------------------------------------ stop-out
# NOW_MS is Tuesday 17:13:20 New York: the trading day began at 17:00, the next begins
# Wednesday 17:00. The agent's daily stop-out shows on the wire as its execution reports.

DAY_START = trading_day_start_ms(NOW_MS)
NEXT_DAY = next_trading_day_start_ms(NOW_MS)
SUBJECT = "tc.alice.executions"
REJECTED = execution_pb2.EXECUTION_STATUS_REJECTED


def report(command_id: str, **fields: object) -> bytes:
    base: dict[str, object] = dict(command_id=command_id, user_id="alice", status=execution_pb2.EXECUTION_STATUS_FILLED,
                                   command_type=commands_pb2.CLOSE_ALL, received_at=NOW_MS, executed_at=NOW_MS,
                                   reason="closed 2 positions")
    return execution_pb2.ExecutionReport(**{**base, **fields}).SerializeToString()


def opening(command_id: str, at: int, **fields: object) -> bytes:
    return report(command_id, command_type=commands_pb2.OPEN_POSITION, symbol="EURUSD", signal_id="sig-1",
                  received_at=at, executed_at=at, **fields)


def clocked() -> tuple[FleetState, list[int]]:
    now = [NOW_MS]
    fleet = FleetState(now_ms=lambda: now[0])
    fleet.on_config("alice", config())
    return fleet, now


def open_signal_result(fleet: FleetState, now: int) -> Adjusted | Skip:
    return adjust(domain_signal(created_at_ms=now - 1_000, expires_at_ms=now + 60_000), fleet.user_state("alice"), now)


def test_the_agents_stop_out_close_all_stops_the_user_until_the_next_trading_day():
    fleet, now = clocked()
    assert not fleet.is_stopped_out("alice")
    fleet.on_execution(SUBJECT, report(stop_out_close_all_id("alice", DAY_START)))
    assert fleet.user_state("alice").stopped_out
    result = open_signal_result(fleet, NOW_MS)
    assert isinstance(result, Skip) and result.reason is SkipReason.STOPPED_OUT
    now[0] = NEXT_DAY - 1
    assert fleet.is_stopped_out("alice")
    now[0] = NEXT_DAY                     # where the agent lifts its own block
    assert not fleet.user_state("alice").stopped_out


def test_a_refused_close_all_still_announces_the_stop_out():
    # The breach came just before 17:00; the close-all, refused in the rollover, was handled after it.
    fleet, _ = clocked()
    yesterday = trading_day_start_ms(DAY_START - 1)
    fleet.on_execution(SUBJECT, report(stop_out_close_all_id("alice", yesterday), received_at=DAY_START + 5_000,
                                       executed_at=DAY_START + 5_000, status=REJECTED,
                                       reject_code="market_closed"))
    assert fleet.stopped_out["alice"].until_ms == DAY_START    # yesterday's block ended at today's start
    assert not fleet.is_stopped_out("alice")


def test_an_open_refused_as_stopped_out_stops_the_user_and_a_later_fill_lifts_it():
    fleet, now = clocked()
    fleet.on_execution(SUBJECT, opening("mf1aaaaaaaaaaaaaaaaaaaaaaaa", NOW_MS, status=REJECTED,
                                        reject_code="stopped_out", reason="stopped out"))
    assert fleet.is_stopped_out("alice")
    # An opening the agent filled before the stop-out says nothing new; one after it: the agent trades again.
    fleet.on_execution(SUBJECT, opening("mf1bbbbbbbbbbbbbbbbbbbbbbbb", NOW_MS - 60_000, ticket=5, fill_price=1.085,
                                        filled_volume=0.1))
    assert fleet.is_stopped_out("alice")
    now[0] = NOW_MS + 120_000
    fleet.on_execution(SUBJECT, opening("mf1cccccccccccccccccccccccc", NOW_MS + 60_000, ticket=6, fill_price=1.085,
                                        filled_volume=0.1))
    assert not fleet.is_stopped_out("alice")
    result = open_signal_result(fleet, now[0])   # no quote in this state: the next gate speaks
    assert isinstance(result, Skip) and result.reason is SkipReason.NO_QUOTE


def test_other_close_alls_and_refusals_are_not_a_stop_out():
    fleet, _ = clocked()
    fleet.on_execution(SUBJECT, report(command_id_for("weekend:1", "alice", "close-all")))      # the weekend close
    fleet.on_execution(SUBJECT, report(command_id_for("sig-9", "alice", "close_all"), signal_id="sig-9"))
    fleet.on_execution(SUBJECT, report(stop_out_close_all_id("bob", DAY_START)))             # someone else's id
    fleet.on_execution(SUBJECT, opening("mf1dddddddddddddddddddddddd", NOW_MS, status=REJECTED,
                                        reject_code="daily_loss", reason="daily loss"))
    assert not fleet.is_stopped_out("alice") and fleet.stopped_out == {}


def test_the_agent_and_the_worker_name_the_stop_out_close_all_alike():
    # The agent's guard decides the close-all; the worker recognises its report by the same id.
    limits = RiskLimits(trading_symbols=frozenset({"EURUSD"}), max_daily_loss=100.0)
    marks = Watermarks().advance(10_000.0, NOW_MS - 1_000)
    step = guard_account(marks, limits, auto_close_friday=False, equity=9_800.0, now_ms=NOW_MS)
    (close,) = step.closes
    assert close.command_id("alice") == stop_out_close_all_id("alice", DAY_START)


async def test_the_worker_skips_a_user_whose_real_agent_stopped_out(fresh_nats_server, tmp_path):
    # The agent's own daily stop-out (test_agent_risk.py) as the adjustment worker reads it from JetStream.
    async with AgentHarness(fresh_nats_server, tmp_path, risk={"max_daily_loss": 0.01}) as h:
        opened = h.command(lot_size=1.0)
        await h.send(opened)
        assert (await h.report(opened.command_id)).status == execution_pb2.EXECUTION_STATUS_FILLED
        await wait_for(lambda: any(r.command_type == commands_pb2.CLOSE_ALL for r in h.reports),
                       "the stop-out's close-all reported")
        fleet = FleetState(now_ms=h.now_ms)
        fleet.on_config("alice", config())
        for stored in await h.stored_reports():
            fleet.on_execution(SUBJECT, stored.SerializeToString())
        assert fleet.is_stopped_out("alice")
        result = open_signal_result(fleet, h.now_ms())
        assert isinstance(result, Skip) and result.reason is SkipReason.STOPPED_OUT

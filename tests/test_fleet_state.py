"""The adjustment worker's view of each user's ClientConfig (workers/adapters/fleet_state.py):
read and checked once per KV change into a policy, refused configs counted and the last good
policy kept, a config stored under another user's key refused."""

from __future__ import annotations

from factories import NOW_MS

from mt5fleet.proto.domain.config import SizingMode
from mt5fleet.proto.v1 import account_pb2, config_pb2
from mt5fleet.workers.adapters.fleet_state import FleetState


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

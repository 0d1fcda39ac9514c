"""Close / modify / partial close driven by the agents' real execution reports.

First the position index on its own (``fleet_state.PositionBook``: reports in, positions
and volumes out), then end to end against a real nats-server and the real AdjustWorker:
an OPEN signal fans out, some users report fills on ``tc.<uid>.executions`` as the agent
does, and every later CLOSE / MODIFY signal of that position must give exactly one command
per holder, aimed at that holder's ticket with the right lots, and none to anyone else,
also from a worker started after the reports were stored.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import nats
import pytest
from factories import FLEET_ASK, FLEET_BID, fleet_signal
from waiting import wait_for

from mt5fleet.proto import subjects
from mt5fleet.proto.domain import ids
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.v1 import (
    account_pb2,
    commands_pb2,
    config_pb2,
    execution_pb2,
    prices_pb2,
    signals_pb2,
    symbols_pb2,
)
from mt5fleet.workers.adapters.fleet_state import FleetState
from mt5fleet.workers.app.adjust_service import AdjustWorker
from mt5fleet.workers.core.adjust import close_command_id

WEDNESDAY = 1_795_014_000_000  # 10:00 New York: market open
FILLED, PARTIAL, REJECTED = (execution_pb2.EXECUTION_STATUS_FILLED, execution_pb2.EXECUTION_STATUS_PARTIAL,
                             execution_pb2.EXECUTION_STATUS_REJECTED)
OPEN, CLOSE, MODIFY, CLOSE_ALL = (commands_pb2.OPEN_POSITION, commands_pb2.CLOSE_POSITION,
                                  commands_pb2.MODIFY_POSITION, commands_pb2.CLOSE_ALL)
_origin = time.monotonic()
_sequence = itertools.count(1)


def now_ms() -> int:
    return WEDNESDAY + int((time.monotonic() - _origin) * 1000)


def report(command_id: str, user_id: str = "alice", *, kind: int = OPEN, ticket: int = 0, volume: float = 0.0,
           status: int = FILLED, signal_id: str = "sig-open", symbol: str = "EURUSD",
           order_type: int = commands_pb2.BUY) -> bytes:
    """An ExecutionReport as the agent writes it (client/commands.py ``_report``)."""
    now = now_ms()
    message = execution_pb2.ExecutionReport(
        command_id=command_id, user_id=user_id, status=status, retcode=10009 if status != REJECTED else 0,
        ticket=ticket, fill_price=1.10012 if volume else 0.0, filled_volume=volume, received_at=now - 40,
        executed_at=now - 10, symbol=symbol, command_type=kind, order_type=order_type, signal_id=signal_id,
        command_created_at=now - 60, signal_created_at=now - 90, sequence=next(_sequence),
        reason="max spread" if status == REJECTED else "", reject_code="max_spread" if status == REJECTED else "")
    return message.SerializeToString()


# ------------------------------------------------------------------ the position index


def _state() -> FleetState:
    return FleetState(now_ms=now_ms)


def _positions(state: FleetState, user_id: str = "alice") -> tuple[dict, dict]:
    book = state.positions.get(user_id)
    return (book.by_signal(), book.volumes()) if book is not None else ({}, {})


def test_fills_index_positions_by_signal_with_their_volume() -> None:
    state = _state()
    state.on_execution("tc.alice.executions", report("mf1a", ticket=11, volume=0.2))
    state.on_execution("tc.alice.executions", report("mf1b", ticket=12, volume=0.05, status=PARTIAL))
    state.on_execution("tc.alice.executions", report("mf1c", ticket=13, volume=0.2, signal_id="sig-other"))
    state.on_execution("tc.alice.executions", report("mf1d", status=REJECTED, signal_id="sig-open"))
    placed = report("mf1e", order_type=commands_pb2.BUY_LIMIT)     # a pending order placed: no position yet
    state.on_execution("tc.alice.executions", placed)
    assert _positions(state) == ({"sig-open": (("mf1a", 11), ("mf1b", 12)), "sig-other": (("mf1c", 13),)},
                                 {11: 0.2, 12: 0.05, 13: 0.2})
    assert _positions(state, "bob") == ({}, {})


def test_close_reports_reduce_the_volume_and_a_full_close_drops_the_position() -> None:
    state = _state()
    state.on_execution("tc.alice.executions", report("mf1a", ticket=11, volume=0.3))
    closing = close_command_id("sig-half", "alice", 11)
    state.on_execution("tc.alice.executions", report(closing, kind=CLOSE, ticket=11, volume=0.1, signal_id="sig-half"))
    # Read twice (a restarted consumer, a re-sent report): counted once.
    state.on_execution("tc.alice.executions", report(closing, kind=CLOSE, ticket=11, volume=0.1, signal_id="sig-half"))
    assert _positions(state)[1] == {11: 0.2}
    rest = close_command_id("sig-rest", "alice", 11)
    state.on_execution("tc.alice.executions", report(rest, kind=CLOSE, ticket=11, volume=0.2, signal_id="sig-rest"))
    assert _positions(state) == ({}, {})


def test_a_close_report_without_a_ticket_is_matched_by_its_command_id() -> None:
    # On a netting account the closing deal names no position, so the agent reports ticket 0.
    state = _state()
    state.on_execution("tc.alice.executions", report("mf1a", ticket=11, volume=0.3))
    state.on_execution("tc.alice.executions", report("mf1b", ticket=12, volume=0.3))
    closing = close_command_id("sig-half", "alice", 12)
    state.on_execution("tc.alice.executions", report(closing, kind=CLOSE, volume=0.1, signal_id="sig-half"))
    state.on_execution("tc.alice.executions", report("mf1zzz", kind=CLOSE, volume=0.1, signal_id="sig-half"))
    assert _positions(state)[1] == {11: 0.3, 12: 0.2}


def test_close_all_drops_the_positions_of_its_symbol_and_a_partial_one_drops_none() -> None:
    state = _state()
    state.on_execution("tc.alice.executions", report("mf1a", ticket=11, volume=0.3))
    state.on_execution("tc.alice.executions", report("mf1b", ticket=12, volume=0.3, symbol="GBPUSD"))
    state.on_execution("tc.alice.executions", report("mf1x", kind=CLOSE_ALL, volume=0.3, status=PARTIAL,
                                                     signal_id="sig-flat", symbol=""))
    assert set(_positions(state)[1]) == {11, 12}   # which ones closed is not said: keep both
    state.on_execution("tc.alice.executions", report("mf1y", kind=CLOSE_ALL, volume=0.3, signal_id="sig-flat"))
    assert set(_positions(state)[1]) == {12}
    state.on_execution("tc.alice.executions", report("mf1z", kind=CLOSE_ALL, volume=0.3, signal_id="sig-flat2",
                                                     symbol=""))
    assert _positions(state) == ({}, {})


# ------------------------------------------------------------------ end to end

USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
HOLDERS = USERS[:4]       # their opening commands were filled
# erin's was refused by her agent; frank's agent never answered.
TICKETS = {uid: 5001 + i for i, uid in enumerate(HOLDERS)}
REFERENCE_BID, REFERENCE_ASK = FLEET_BID, FLEET_ASK   # the signals' reference feed


def user_quote(uid: str) -> tuple[float, float]:
    bid = round(REFERENCE_BID + (USERS.index(uid) - 2) * 1e-5, 5)  # brokers a few points off the reference
    return bid, round(bid + 10e-5, 5)


async def _populate(js) -> None:
    kv = await js.key_value(subjects.CONFIG_BUCKET)
    now = now_ms()
    for uid in USERS:
        config = config_pb2.ClientConfig(user_id=uid, tier_name="pro", trading_symbols=["EURUSD"],
                                         max_quote_age_ms=60_000)  # prices are published once, not every second
        config.risk.max_risk_per_trade = 1.0
        await kv.put(uid, config.SerializeToString())
        bid, ask = user_quote(uid)
        prices = prices_pb2.ClientPriceStream(user_id=uid, batch_timestamp=now, prices=[prices_pb2.ClientPrice(
            symbol="EURUSD", bid=bid, ask=ask, spread=10, timestamp=now)])
        await js.publish(subjects.user_subject(uid, subjects.Channel.PRICES), prices.SerializeToString())
        # dave's broker trades 0.10 lots at least, on a 0.01 step.
        spec = symbols_pb2.SymbolSpec(symbol="EURUSD", broker_symbol="EURUSD", digits=5, point=1e-5,
                                      contract_size=100_000, tick_size=1e-5, tick_value=1.0,
                                      volume_min=0.1 if uid == "dave" else 0.01, volume_max=100, volume_step=0.01,
                                      trade_mode=4, currency_base="EUR", currency_profit="USD")
        specs = symbols_pb2.SymbolSpecList(user_id=uid, timestamp=now, specs=[spec])
        await js.publish(subjects.user_subject(uid, subjects.Channel.SYMBOLS), specs.SerializeToString())
        account = account_pb2.AccountProfile(user_id=uid, account_number="1", base_currency="USD", balance=10_600,
                                             equity=10_600, margin_free=10_600, timestamp=now)
        await js.publish(subjects.user_subject(uid, subjects.Channel.ACCOUNT), account.SerializeToString())


class Fleet:
    """The test's side of the wire: signals in, commands out, agents' reports back."""

    def __init__(self, js) -> None:
        self.js = js
        self.handled = 0   # signals every partition has finished

    async def start_worker(self, url: str, replica_id: str) -> tuple[AdjustWorker, object]:
        client = await nats.connect(url)
        worker = AdjustWorker(client, replica_id=replica_id, lease_ttl_ms=2000, now_ms=now_ms)
        await worker.start()
        await wait_for(lambda: len(worker.owned) == subjects.ADJUST_PARTITIONS and all(
            len(table) == len(USERS) for table in (worker.state.policies, worker.state.quotes, worker.state.specs,
                                                   worker.state.accounts)), "the worker's state and partitions")
        self.handled = 0
        return worker, client

    async def send(self, worker: AdjustWorker, sig: signals_pb2.UniversalSignal) -> dict[str, list]:
        """Publish ``sig``; once every partition has handled it, its commands by user."""
        await self.js.publish(subjects.signal_subject("EURUSD"), sig.SerializeToString(),
                              headers={"Nats-Msg-Id": sig.signal_id})
        self.handled += 1
        done = worker.metrics.signals.labels("done")
        await wait_for(lambda: done._value.get() == self.handled * subjects.ADJUST_PARTITIONS,
                        f"signal {sig.signal_id} on every partition")
        by_user: dict[str, list] = {}
        for command in await self._commands():
            if command.signal_id == sig.signal_id:
                by_user.setdefault(command.user_id, []).append(command)
        return by_user

    async def _commands(self) -> list[commands_pb2.TradingCommand]:
        stored = (await self.js.stream_info(subjects.COMMANDS_STREAM)).state.messages
        subscription = await self.js.subscribe("tc.*.commands", ordered_consumer=True)
        out = [commands_pb2.TradingCommand.FromString((await subscription.next_msg(timeout=5)).data)
               for _ in range(stored)]
        await subscription.unsubscribe()
        return out

    async def report(self, command: commands_pb2.TradingCommand, **fields: object) -> None:
        """The user's agent answers ``command``; stored on tc.<uid>.executions as the agent's outbox does."""
        fields.setdefault("signal_id", command.signal_id)
        await self.js.publish(subjects.user_subject(command.user_id, subjects.Channel.EXECUTIONS),
                              report(command.command_id, command.user_id, kind=command.type, **fields),
                              headers={"Nats-Msg-Id": command.command_id})

    async def open_positions(self, worker: AdjustWorker) -> dict[str, commands_pb2.TradingCommand]:
        opened = {uid: one for uid, (one,) in (await self.send(worker, fleet_signal("sig-open", now_ms()))).items()}
        assert set(opened) == set(USERS)
        for uid in HOLDERS:
            await self.report(opened[uid], ticket=TICKETS[uid], volume=opened[uid].lot_size)
        await self.report(opened["erin"], status=REJECTED)
        return opened


def volumes_seen(worker: AdjustWorker, expected: dict[str, float | None]) -> Callable[[], bool]:
    """The worker has read the reports: each user's position volume as the test expects (None: closed)."""
    def check() -> bool:
        books = worker.state.positions
        return all((books[uid].volumes() if uid in books else {}).get(TICKETS[uid]) == lots
                   for uid, lots in expected.items())
    return check


def lots(commands: dict[str, list]) -> dict[str, float]:
    return {uid: one.lot_size for uid, (one,) in commands.items()}


def assert_aimed_at_the_holders(commands: dict[str, list], opened: dict, kind: int, holders=HOLDERS) -> None:
    assert set(commands) == set(holders)   # nothing for erin (refused) or frank (no answer)
    for uid, (command,) in commands.items():
        assert command.type == kind and command.symbol == "EURUSD"
        assert command.position_ticket == TICKETS[uid]
        assert command.target_command_id == opened[uid].command_id == ids.command_id_for("sig-open", uid, "open")


@pytest.fixture
async def fleet(fresh_nats_server):
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    await _populate(js)
    yield Fleet(js)
    await client.close()


async def test_modify_and_partial_closes_reach_exactly_the_holders_with_the_right_lots(fresh_nats_server, fleet):
    worker, client = await fleet.start_worker(fresh_nats_server.url, "solo")
    try:
        opened = await fleet.open_positions(worker)
        # 99 % of 1% of 10,600 USD over 500 points + 20 allowed for the price to move: 0.2018 -> 0.2 lots.
        assert {opened[uid].lot_size for uid in USERS} == {0.2}
        await wait_for(volumes_seen(worker, dict.fromkeys(HOLDERS, 0.2)), "the fills")
        skipped = worker.metrics.skips.labels("no_position")

        modified = await fleet.send(worker, fleet_signal("sig-modify", now_ms(), MODIFY, stop_loss=1.09702,
                                                         take_profit=1.10802))
        assert_aimed_at_the_holders(modified, opened, MODIFY)
        for uid, (command,) in modified.items():
            shift = user_quote(uid)[1] - REFERENCE_ASK    # a BUY's levels follow the broker's ask
            assert command.stop_loss == pytest.approx(round(1.09702 + shift, 5), abs=1e-9)
            assert command.take_profit == pytest.approx(round(1.10802 + shift, 5), abs=1e-9)
        assert skipped._value.get() == 2

        # 30% of 0.2 lots: 0.06, but dave's broker takes no less than 0.10.
        part = await fleet.send(worker, fleet_signal("sig-part", now_ms(), CLOSE, close_fraction=0.3))
        assert_aimed_at_the_holders(part, opened, CLOSE)
        assert lots(part) == {"alice": 0.06, "bob": 0.06, "carol": 0.06, "dave": 0.1}
        assert skipped._value.get() == 4

        # The agents report those closes: alice and dave name the ticket (hedging), bob's
        # netting account does not. carol's agent has not answered yet.
        for uid in ("alice", "dave"):
            await fleet.report(part[uid][0], ticket=TICKETS[uid], volume=part[uid][0].lot_size)
        await fleet.report(part["bob"][0], volume=0.06)
        await wait_for(volumes_seen(worker, {"alice": 0.14, "bob": 0.14, "carol": 0.2, "dave": 0.1}), "the closes")

        # Half of what is left: 0.07 of 0.14; carol 0.10 of 0.20; dave's 0.05 would be
        # raised to 0.10, leaving nothing: his whole position goes (lot 0 = all).
        rest = await fleet.send(worker, fleet_signal("sig-half", now_ms(), CLOSE, close_fraction=0.5))
        assert_aimed_at_the_holders(rest, opened, CLOSE)
        assert lots(rest) == {"alice": 0.07, "bob": 0.07, "carol": 0.1, "dave": 0.0}

        everything = await fleet.send(worker, fleet_signal("sig-close", now_ms(), CLOSE))
        assert_aimed_at_the_holders(everything, opened, CLOSE)
        assert set(lots(everything).values()) == {0.0}
        assert everything["alice"][0].command_id == close_command_id("sig-close", "alice", TICKETS["alice"])
    finally:
        await worker.stop()
        await client.close()


async def test_a_worker_started_after_the_reports_rebuilds_the_positions_from_the_stream(fresh_nats_server, fleet):
    worker, client = await fleet.start_worker(fresh_nats_server.url, "first")
    try:
        opened = await fleet.open_positions(worker)
        part = await fleet.send(worker, fleet_signal("sig-part", now_ms(), CLOSE, close_fraction=0.3))
        await fleet.report(part["alice"][0], ticket=TICKETS["alice"], volume=0.06)
        await fleet.report(part["bob"][0], volume=0.06)            # netting: no ticket
        flat = await fleet.send(worker, fleet_signal("sig-flat", now_ms(), CLOSE_ALL))
        assert set(flat) == set(USERS)                              # close-all needs no known position
        await fleet.report(flat["carol"][0], volume=0.2)            # carol is flat now
        await fleet.report(part["dave"][0], status=REJECTED)        # dave's close was refused: still 0.2
    finally:
        await worker.stop()
        await client.close()

    worker, client = await fleet.start_worker(fresh_nats_server.url, "second")
    try:
        await wait_for(volumes_seen(worker, {"alice": 0.14, "bob": 0.14, "carol": None, "dave": 0.2}),
                        "positions from the stream")
        half = await fleet.send(worker, fleet_signal("sig-half", now_ms(), CLOSE, close_fraction=0.5))
        assert_aimed_at_the_holders(half, opened, CLOSE, holders=("alice", "bob", "dave"))
        assert lots(half) == {"alice": 0.07, "bob": 0.07, "dave": 0.1}
        assert worker.metrics.skips.labels("no_position")._value.get() == 3   # carol, erin, frank
    finally:
        await worker.stop()
        await client.close()

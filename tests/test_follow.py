"""The shared recovery pieces, against a real nats-server: the ``Follower``
(proto/runtime/follow.py) where nats-py's ordered consumer never comes back (a time-window
start across a server restart: docs/upstream/nats-py-ordered-consumer-reset.md), the
layout's ``create_missing`` (creates what is missing, never changes what exists), and the
probes' ``Health`` (``/readyz`` and ``/healthz`` say why, one log line and one count per
transition, wedged only while connected)."""

from __future__ import annotations

import asyncio
import logging
import time

import nats
import pytest
from aiohttp import test_utils  # aiohttp's in-process HTTP client and server
from waiting import eventually, wait_for

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.follow import (
    Follower,
    FollowOptions,
    FromFirst,
    FromSequence,
    FromTime,
    sequences,
    wall_ms,
)
from mt5fleet.proto.runtime.probes import Health, probe_app

FAST = FollowOptions(idle_heartbeat_s=0.5, check_interval_s=1.0)


async def test_a_time_window_follower_comes_back_after_a_restart_with_nothing_lost_or_repeated(fresh_nats_server):
    client = await nats.connect(fresh_nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    js = client.jetstream()
    await js.add_stream(name="AUDIT", subjects=["audit.>"])
    for n in range(3):
        await js.publish("audit.a", f"before-{n}".encode())
    seen: list[str] = []
    follower = await Follower(client, "AUDIT", lambda m: seen.append(m.data.decode()), options=FAST,
                              start=lambda: FromTime(wall_ms() - 3_600_000)).start()
    try:
        await wait_for(lambda: len(seen) == 3, "the messages stored before the follower started")
        fresh_nats_server.restart()          # nats-py's ordered consumer is refused from here on (err 10094)
        for n in range(3):   # retried while the client reconnects; the message id keeps it stored once
            payload = f"after-{n}".encode()
            await eventually(lambda p=payload: js.publish("audit.a", p, timeout=1, headers={"Nats-Msg-Id": p.decode()}),
                             "a publish after the restart", retry_on=(Exception,))
        await wait_for(lambda: len(seen) == 6, lambda: f"the messages after the restart: {seen}")
        assert seen == [f"before-{n}" for n in range(3)] + [f"after-{n}" for n in range(3)]
        assert follower.resets == 1 and follower.last_sequence == 6 and follower.problem(0) is None
    finally:
        await follower.stop()
        await client.close()


async def test_a_follower_behind_its_stream_says_so_until_it_has_caught_up(nc):
    js = nc.jetstream()
    await js.add_stream(name="PRICES", subjects=["prices.>"], storage="memory")
    await asyncio.gather(*(js.publish(f"prices.u{n}", b"batch") for n in range(150)))
    seen: list[int] = []

    def slow(message) -> None:       # a handler slower than the stream: 150 messages take 1.5 s
        time.sleep(0.01)
        seen.append(sequences(message.reply)[0])
    options = FollowOptions(idle_heartbeat_s=0.5, check_interval_s=0.3, stuck_after_s=60, yield_every=1)
    follower = await Follower(nc, "PRICES", slow, start=FromFirst, options=options).start()
    try:
        await wait_for(lambda: follower.problem(0.5) is not None, "the follower reported behind its stream")
        assert "PRICES: behind the stream for" in follower.problem(0.5) and "stored up to 150" in follower.problem(0.5)
        await wait_for(lambda: len(seen) == 150 and follower.problem(0.5) is None, "caught up", timeout=20)
        assert seen == list(range(1, 151)) and follower.resets == 0
    finally:
        await follower.stop()


async def test_caught_up_waits_for_what_the_stream_holds_and_wakes_a_follower_that_lost_its_consumer(nc):
    """Read-your-writes: a fill stored just now is handled before a close is decided on it,
    even when the follower's consumer vanished (a lost node) and it has not noticed yet."""
    js = nc.jetstream()
    await js.add_stream(name="FILLS", subjects=["fills.>"])
    seen: list[bytes] = []
    slow_to_notice = FollowOptions(idle_heartbeat_s=5.0, check_interval_s=30.0)
    follower = await Follower(nc, "FILLS", lambda m: seen.append(m.data), start=FromFirst,
                              options=slow_to_notice).start()
    try:
        await js.publish("fills.alice", b"open")
        assert await follower.caught_up(5) and seen == [b"open"]
        await js.delete_consumer("FILLS", follower.consumer)   # gone behind its back
        await js.publish("fills.alice", b"fill")
        assert await follower.caught_up(8) and seen == [b"open", b"fill"]
        assert follower.resets == 1
        await follower.stop()                                 # one that cannot catch up says so in time
        await js.publish("fills.alice", b"later")
        assert not await follower.caught_up(0.3)
    finally:
        await follower.stop()


def test_sequences_are_read_from_both_reply_subject_forms():
    assert sequences("$JS.ACK.AUDIT.c1.1.42.7.1700000000000000000.0") == (42, 7)
    assert sequences("$JS.ACK.hub.ACCHASH.AUDIT.c1.1.42.7.1700000000000000000.0.xyz") == (42, 7)


async def test_create_missing_creates_what_is_missing_and_changes_nothing_that_exists(nc):
    js = nc.jetstream()
    bootstrapped = subjects.build_layout({"streams": {subjects.PRICES_STREAM: {"max_age_s": 120}}})
    await bootstrap.bootstrap(js, bootstrapped)
    layout = subjects.build_layout()                  # a worker given no --jetstream-config
    unchanged = await bootstrap.create_missing(js, layout, subjects.PRICES_STREAM)
    assert unchanged.action is bootstrap.Action.UNCHANGED
    assert (await js.stream_info(subjects.PRICES_STREAM)).config.max_age == 120   # bootstrap's limit stands

    await js.delete_stream(layout.bucket(subjects.LEASES_BUCKET).stream_name)
    created = await bootstrap.create_missing(js, layout, subjects.LEASES_BUCKET)
    assert (created.kind, created.action) == ("kv", bootstrap.Action.CREATED)
    await js.key_value(subjects.LEASES_BUCKET)

    consumer = subjects.adjust_consumer(3)
    await js.delete_consumer(subjects.SIGNALS_STREAM, consumer)
    again = await bootstrap.create_missing(js, layout, consumer, start=FromSequence(17))
    assert again.action is bootstrap.Action.CREATED
    config = (await js.consumer_info(subjects.SIGNALS_STREAM, consumer)).config
    assert (config.deliver_policy, config.opt_start_seq, config.opt_start_time) == ("by_start_sequence", 17, None)
    assert (config.ack_wait, config.max_deliver) == (subjects.ADJUST_ACK_WAIT_S, 20)  # the rest as bootstrap defines it
    with pytest.raises(ValueError, match="no stream, bucket or consumer"):
        await bootstrap.create_missing(js, layout, "NOT_A_STREAM")


async def test_readyz_and_healthz_say_why_once_per_transition(nc, caplog):
    now, problem, connected = [0.0], [None], [True]
    health = Health(connected=lambda: connected[0], clock=lambda: now[0])
    health.add("prices", lambda: problem[0], wedged_after_s=300)
    app = probe_app(health.registry, nc, health)
    async with test_utils.TestClient(test_utils.TestServer(app)) as http:
        assert (await http.get("/readyz")).status == 200
        problem[0] = "no prices seen for 16 s"
        caplog.set_level(logging.INFO, logger="mt5fleet.health")
        for _ in range(3):
            response = await http.get("/readyz")
            assert response.status == 503
            assert (await response.json())["failing"] == {"prices": "no prices seen for 16 s"}
        assert [r.getMessage() for r in caplog.records] == ["not ready: prices: no prices seen for 16 s"]
        assert health.unready.labels("prices")._value.get() == 1
        assert health.ready_gauge.labels("prices")._value.get() == 0

        connected[0] = False                          # a restart cannot bring NATS back: still alive
        now[0] = 1_000
        assert (await http.get("/healthz")).status == 200
        connected[0] = True
        health.evaluate()
        now[0] = 1_301
        response = await http.get("/healthz")
        assert response.status == 503 and "restart" in (await response.json())["wedged"]["prices"]

        problem[0] = None
        assert (await http.get("/readyz")).status == 200 and (await http.get("/healthz")).status == 200
        assert caplog.records[-1].getMessage() == "ready again: prices"
        assert health.ready_gauge.labels("prices")._value.get() == 1

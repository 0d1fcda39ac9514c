"""The catch-up service against a real nats-server: an agent's request on tc.<uid>.catchup
gets that user's stored commands only, in stream order, page by page, from since_ms, with
nothing lost or repeated across pages; bad requests are answered with a reason and counted.
(Another user's subject refused by permissions: tests/test_nats_credentials.py.)"""

from __future__ import annotations

import asyncio
import random

import nats
import pytest
from waiting import eventually, wait_for

from mt5fleet.client.adapters.catchup import CatchupFailed, catch_up
from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.client.app import catchup_runner
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.catchup import CatchupQuery
from mt5fleet.proto.domain.clock import SystemClock
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.v1.catchup_pb2 import CatchupBatch, CatchupRequest
from mt5fleet.proto.validation_catchup import catchup_batch_message
from mt5fleet.workers.adapters.command_store import CommandStore
from mt5fleet.workers.app.catchup_service import CatchupService
from mt5fleet.workers.core.catchup import PAGE_BYTES

FREE_TIER_PAYLOAD = 32 * 1024  # operator/core/tiers.py: the smallest tier's max_payload_bytes


@pytest.fixture
async def platform(nc):
    await bootstrap.bootstrap(nc.jetstream(), subjects.build_layout())
    service = CatchupService(nc)
    await service.start()
    yield nc, service
    await service.stop()


@pytest.fixture
async def agents(fresh_nats_server):
    """As agents connect: each with its own inbox prefix."""
    connections = {user: await nats.connect(fresh_nats_server.url, inbox_prefix=subjects.inbox_prefix(user))
                   for user in ("alice", "bob")}
    yield connections
    for connection in connections.values():
        await connection.close()


async def store(nc, user_id: str, payloads: list[bytes]) -> None:
    js = nc.jetstream()
    for payload in payloads:
        await js.publish(subjects.user_subject(user_id, subjects.Channel.COMMANDS), payload,
                         headers={"Nats-Msg-Id": payload.decode()})


def served(service: CatchupService, result: str = "served") -> float:
    return service.metrics.requests.labels(result)._value.get()


async def test_each_user_gets_only_its_own_commands_in_order_and_paged(platform, agents):
    nc, service = platform
    alice = [f"alice-{i}".encode() for i in range(25)]
    bob = [f"bob-{i}".encode() for i in range(7)]
    for index in range(25):  # interleaved in the stream
        await store(nc, "alice", alice[index:index + 1])
        if index < len(bob):
            await store(nc, "bob", bob[index:index + 1])
    caught: dict[str, list[bytes]] = {"alice": [], "bob": []}
    for user, connection in agents.items():
        assert await catch_up(connection, user, 0, caught[user].append, page_commands=4) == len(caught[user])
    assert caught == {"alice": alice, "bob": bob}  # only its own, in order, none lost or twice
    assert served(service) == 7 + 2  # pages of 4
    assert service.metrics.commands._value.get() == 25 + 7
    assert await catch_up(agents["alice"], "alice", 0, lambda raw: None, page_commands=10) == 25
    assert served(service) == 9 + 3


async def test_from_since_ms_it_starts_at_the_first_command_stored_then(platform, agents):
    nc, service = platform
    for batch in range(6):  # stored over time, so that since_ms falls between and on messages
        await store(nc, "alice", [f"alice-{batch}-{i}".encode() for i in range(5)])
        await store(nc, "bob", [f"bob-{batch}".encode()])
        await asyncio.sleep(0.005)
    commands = subjects.user_subject("alice", subjects.Channel.COMMANDS)
    stored, reader = [], CommandStore(nc.jetstream())
    item = await reader.next_from(commands, 1)
    while item is not None:
        stored.append(item)
        item = await reader.next_from(commands, item.sequence + 1)
    assert len(stored) == 30
    for since_ms in sorted({s.time_ms for s in stored} | {s.time_ms + 1 for s in stored}):
        expected = [s.data for s in stored if s.time_ms >= since_ms]
        first = await reader.first_since(commands, since_ms)
        assert (first.data if first else None) == (expected[0] if expected else None), since_ms
        caught: list[bytes] = []
        await catch_up(agents["alice"], "alice", since_ms, caught.append)
        assert caught == expected, since_ms
    assert await catch_up(agents["alice"], "alice", stored[-1].time_ms + 60_000, lambda raw: None) == 0


async def test_a_page_stays_well_under_the_smallest_tier_payload(platform):
    nc, service = platform
    big = [f"alice-{i}-".encode() + b"x" * 5000 for i in range(10)]
    await store(nc, "alice", big)
    after, pages = 0, []
    while True:
        page = await service.read_page("alice", CatchupQuery(since_ms=0, after_sequence=after, max_commands=100))
        pages.append(page)
        assert len(catchup_batch_message(page).SerializeToString()) <= PAGE_BYTES < FREE_TIER_PAYLOAD
        if page.done:
            break
        after = page.last_sequence
    assert [c for page in pages for c in page.commands] == big and len(pages) == 4  # 3 + 3 + 3 + 1


async def test_a_malformed_request_gets_its_reason_and_is_counted(platform, agents):
    _, service = platform
    subject = subjects.user_subject("alice", subjects.Channel.CATCHUP)
    for payload, reason in ((b"\xff\xff\xff", "CatchupRequest"),
                            (CatchupRequest(since_ms=-5).SerializeToString(), "since_ms"),
                            (CatchupRequest(max_commands=100_000).SerializeToString(), "max_commands")):
        reply = CatchupBatch.FromString((await agents["alice"].request(subject, payload, timeout=5)).data)
        assert reason in reply.error and not reply.commands and not reply.done
    assert service.metrics.refused.labels("invalid")._value.get() == 3 and served(service) == 0
    # A request without a reply subject, or on a subject that is not tc.<uid>.catchup: no answer, counted.
    await agents["alice"].publish(subject, b"")
    await service.nc.publish("tc.Alice.catchup", b"", reply="_INBOX_alice.x")
    await wait_for(lambda: service.metrics.refused.labels("no_reply")._value.get() == 1
                   and service.metrics.refused.labels("subject")._value.get() == 1, "both refusals counted")


async def test_replicas_share_the_requests(platform, agents):
    nc, first = platform
    second = CatchupService(nc)
    await second.start()
    try:
        await store(nc, "alice", [b"alice-1"])
        for _ in range(10):
            assert await catch_up(agents["alice"], "alice", 0, lambda raw: None) == 1
        assert served(first) + served(second) == 10  # each request answered once
    finally:
        await second.stop()


async def test_without_a_service_the_agent_is_told_there_is_none(agents):
    with pytest.raises(CatchupFailed) as failure:
        await catch_up(agents["alice"], "alice", 0, lambda raw: None, timeout_s=1)
    assert failure.value.reason == "no_responders"


class SlowStore(CommandStore):
    """The real store, each read held up as on a loaded JetStream."""

    async def next_from(self, subject: str, sequence: int):
        await asyncio.sleep(0.3)
        return await super().next_from(subject, sequence)


async def test_a_herd_of_requests_is_answered_in_time_or_shed_never_answered_too_late(nc, agents):
    """A fleet reconnecting together asks more than a replica answers in time: the requests
    that waited too long for a page slot are dropped (their agents have given up and ask again
    later), so every page the replica reads is one its agent still waits for."""
    await bootstrap.bootstrap(nc.jetstream(), subjects.build_layout())
    await store(nc, "alice", [b"alice-herd"])
    service = CatchupService(nc, store=SlowStore(nc.jetstream()), concurrent_pages=1, shed_after_s=1.0)
    await service.start()
    try:
        # The tenant's route to the service answers first (on a loaded machine the herd once
        # went out before it did: 12 "no responders", no herd at all).
        await eventually(lambda: catch_up(agents["alice"], "alice", 0, lambda raw: None, timeout_s=3),
                         "the service answering alice", retry_on=(CatchupFailed,))
        await wait_for(lambda: served(service) >= 1, "the warm-up counted")   # counted after its reply
        warm_up = served(service)
        results = await asyncio.gather(*(catch_up(agents["alice"], "alice", 0, lambda raw: None, timeout_s=3)
                                         for _ in range(12)), return_exceptions=True)
        answered = [r for r in results if r == 1]
        gave_up = [r for r in results if isinstance(r, CatchupFailed)]
        assert len(answered) + len(gave_up) == 12 and answered and gave_up
        assert all(failure.reason != "no_responders" for failure in gave_up)
        await wait_for(lambda: served(service) + served(service, "shed") == warm_up + 12,
                       "every request served or shed")
        assert served(service) == warm_up + len(answered)   # nothing read for an agent that had given up
        assert served(service, "shed") == len(gave_up)
    finally:
        await service.stop()


async def test_agents_retry_their_catch_up_at_jittered_not_synchronised_moments():
    waits: dict[int, list[float]] = {}

    for seed in (1, 2):
        runner = catchup_runner.CatchupRunner(user_id="alice", connection=lambda: None, submit=lambda raw: None,
                                              metrics=AgentMetrics(), clock=SystemClock(),
                                              rng=random.Random(seed))

        async def sleep(wait: float, seed=seed) -> None:
            waits.setdefault(seed, []).append(wait)
            if len(waits[seed]) == 6:
                raise asyncio.CancelledError

        runner._sleep = sleep
        runner.start(0)
        with pytest.raises(asyncio.CancelledError):
            await runner._task
    backoff = [1, 2, 4, 8, 16, 30]
    for seed in (1, 2):
        assert all(0.5 * b <= w <= 1.5 * b for w, b in zip(waits[seed], backoff, strict=True)), waits[seed]
    assert waits[1] != waits[2]

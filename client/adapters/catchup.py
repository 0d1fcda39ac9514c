"""Reading the commands an agent missed while it was away.

The live path is a plain subscription (it scales to 10,000 agents; SPEC §2.2). After a
(re)connect the agent creates one short-lived pull consumer of its own, named
``catchup-<uid>`` and filtered to ``tc.<uid>.commands``, starting a little before it
lost the connection; it reads until nothing is pending and deletes the consumer. The
name and the filter both appear in the JetStream API subject
(``$JS.API.CONSUMER.CREATE.TC_COMMANDS.catchup-<uid>.tc.<uid>.commands``), which is what
lets the operator grant each user exactly this consumer and no other.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from mt5fleet.proto import subjects

log = logging.getLogger("mt5fleet.agent.catchup")

FETCH_BATCH = 100
FETCH_TIMEOUT_S = 2.0


def consumer_name(user_id: str) -> str:
    return f"catchup-{user_id}"


async def catch_up(js: JetStreamContext, user_id: str, since_ms: int, submit: Callable[[bytes], None],
                   *, inactive_s: float = 30.0) -> int:
    """Submit every command stored since ``since_ms``; returns how many were read.
    Known ones are harmless: the pipeline dedupes by command id."""
    name = consumer_name(user_id)
    await _delete(js, name)  # a previous run's consumer, left behind by a crash
    config = api.ConsumerConfig(
        name=name,
        filter_subject=subjects.user_subject(user_id, subjects.Channel.COMMANDS),
        deliver_policy=api.DeliverPolicy.BY_START_TIME,
        opt_start_time=dt.datetime.fromtimestamp(since_ms / 1000, tz=dt.UTC),
        ack_policy=api.AckPolicy.EXPLICIT,
        inactive_threshold=inactive_s,  # gone by itself if this agent dies mid-way
        mem_storage=True,
    )
    info = await js.add_consumer(subjects.COMMANDS_STREAM, config=config)
    pending, read = info.num_pending, 0
    if pending:
        subscription = await js.pull_subscribe_bind(consumer=name, stream=subjects.COMMANDS_STREAM)
        try:
            while pending > 0:
                for message in await subscription.fetch(min(pending, FETCH_BATCH), timeout=FETCH_TIMEOUT_S):
                    submit(message.data)
                    await message.ack()
                    read += 1
                    pending = message.metadata.num_pending
        finally:
            await subscription.unsubscribe()
    await _delete(js, name)
    if read:
        log.info("caught up %d command(s) stored since %s", read, since_ms)
    return read


async def _delete(js: JetStreamContext, name: str) -> None:
    try:
        await js.delete_consumer(subjects.COMMANDS_STREAM, name)
    except NotFoundError:
        pass

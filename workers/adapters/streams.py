"""Publishing into the fleet's streams, re-creating one that no longer exists.

A publish to a subject no stream captures gets no answer from JetStream (nats-py raises
``NoStreamResponseError``): the stream was deleted, or, a memory stream, did not survive a
server restart. The worker that writes into it then creates it again through the same
layout ``mt5fleet nats bootstrap`` applies (create only: an existing stream's limits are
bootstrap's) and tries the publish once more; the message id makes the retry safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nats.js.errors import NoStreamResponseError

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.subjects import JetStreamLayout, StreamSpec

log = logging.getLogger("mt5fleet.worker.streams")


def stream_of(layout: JetStreamLayout, subject: str) -> StreamSpec | None:
    """The layout's stream that captures ``subject``."""
    for spec in layout.streams:
        if any(subjects.matches(pattern, subject) for pattern in spec.subjects):
            return spec
    return None


class StreamPublisher:
    def __init__(self, js: Any, layout: JetStreamLayout, *,
                 on_recreated: Callable[[str], None] = lambda stream: None) -> None:
        self.js, self.layout, self.on_recreated = js, layout, on_recreated

    async def publish(self, subject: str, payload: bytes = b"", **options: Any) -> Any:
        try:
            return await self.js.publish(subject, payload, **options)
        except NoStreamResponseError:
            spec = stream_of(self.layout, subject)
            if spec is None:
                raise
            change = await bootstrap.create_missing(self.js, self.layout, spec.name)
            if change.action is bootstrap.Action.CREATED:
                log.warning("stream %s was missing: re-created it from the layout", spec.name)
                self.on_recreated(spec.name)
        return await self.js.publish(subject, payload, **options)

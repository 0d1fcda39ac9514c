"""Publishing into the fleet's streams, re-creating one that no longer exists.

A publish to a subject no stream captures gets no answer from JetStream (nats-py raises
``NoStreamResponseError``): the stream was deleted, or, a memory stream, did not survive a
server restart. The worker that writes into it then creates it again through the same
layout ``mt5fleet nats bootstrap`` applies (create only: an existing stream's limits are
bootstrap's) and tries the publish once more; the message id makes the retry safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.js import api
from nats.js.errors import APIError, NoStreamResponseError

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


class BatchPublisher:
    """JetStream publishes in bulk: every message of a batch goes out at once, each with a
    reply subject under one inbox subscription, and the batch waits for all its PubAcks
    together under one timeout. nats-py's ``js.publish`` makes a request per message (a
    future, a timer, a reply subscription lookup each): at thousands of commands per
    signal that, not the server, was the publishing cost.

    Each result is the ``PubAck`` or the exception ``js.publish`` would have raised
    (``APIError`` from the server, ``NoStreamResponseError`` when no stream captured the
    subject, ``nats.errors.TimeoutError``); callers retry failures one by one through the
    path that re-creates what is missing. Message ids make every retry safe."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self._prefix = ""
        self._subscription: Any = None
        self._waiting: dict[str, asyncio.Future] = {}
        self._next = 0
        self._starting: asyncio.Lock = asyncio.Lock()

    async def publish_many(self, items: list[tuple[str, bytes, dict[str, str]]], *,
                           timeout: float = 10.0) -> list[Any]:
        if not items:
            return []
        await self._subscribe()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future] = []
        tokens: list[str] = []
        try:
            for subject, payload, headers in items:
                self._next += 1
                token = f"{self._prefix}{self._next}"
                future = loop.create_future()
                self._waiting[token] = future
                tokens.append(token)
                futures.append(future)
                await self.nc.publish(subject, payload, reply=token, headers=headers)
            await asyncio.wait(futures, timeout=timeout)
        except BaseException:
            _forget(futures)   # cancelled mid-batch (a partition handed over): nobody reads these answers
            raise
        finally:
            for token in tokens:
                self._waiting.pop(token, None)
        results: list[Any] = []
        for future in futures:
            if future.done() and not future.cancelled():
                results.append(future.exception() or future.result())
            else:
                future.cancel()
                results.append(nats.errors.TimeoutError())
        return results

    async def close(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _subscribe(self) -> None:
        if self._subscription is not None:
            return
        async with self._starting:
            if self._subscription is None:
                inbox = self.nc.new_inbox()
                self._prefix = f"{inbox}."
                self._subscription = await self.nc.subscribe(f"{inbox}.*", cb=self._on_ack)

    async def _on_ack(self, msg: Any) -> None:
        future = self._waiting.pop(msg.subject, None)
        if future is None or future.done():
            return
        try:
            future.set_result(pub_ack(msg))
        except BaseException as exc:  # noqa: BLE001 - handed to the publisher, raised there
            future.set_exception(exc)


def _forget(futures: list[asyncio.Future]) -> None:
    """Answers no one will read: an error already in is marked seen (else asyncio logs
    "Future exception was never retrieved" for each refused record), the rest cancelled."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


def pub_ack(msg: Any) -> Any:
    """A JetStream publish's answer, as ``js.publish`` reads it: the PubAck, or the error."""
    headers = msg.headers or {}
    if not msg.data and headers.get("Status") == "503":
        raise NoStreamResponseError
    response = json.loads(msg.data)
    if "error" in response:
        raise APIError.from_error(response["error"])
    return api.PubAck.from_response(response)

"""Create or update the fleet's JetStream streams, KV buckets and durable consumers.

Idempotent: each resource is read, compared with its ``subjects`` definition on the
fields this project manages, and created, updated or left alone. A second run with the
same layout reports every resource ``unchanged``; a changed limit is applied in place.

``create_missing`` is the self-repair path of running processes (workers): one named
resource of the same layout, created when it is missing and otherwise left exactly as it
is, because its limits and replicas are bootstrap's to change, not a worker's.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError

from mt5fleet.proto.runtime.follow import StartPosition, deliver_fields
from mt5fleet.proto.subjects import ConsumerSpec, JetStreamLayout, KvSpec, Storage, StreamSpec

_NS = 1_000_000_000


class Action(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Change:
    kind: str  # "stream", "kv", "consumer"
    name: str
    action: Action
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        extra = f" ({'; '.join(self.details)})" if self.details else ""
        return f"{self.kind:<8} {self.name:<34} {self.action.value}{extra}"


class BootstrapError(RuntimeError):
    """A difference that JetStream cannot apply in place (e.g. storage type)."""


# Fields JetStream refuses to change on an existing stream.
_IMMUTABLE = ("storage",)


async def bootstrap(js: JetStreamContext, layout: JetStreamLayout) -> list[Change]:
    changes = [await ensure_stream(js, spec) for spec in layout.streams]
    changes += [await ensure_bucket(js, spec) for spec in layout.buckets]
    changes += [await ensure_consumer(js, spec) for spec in layout.consumers]
    return changes


# ---------------------------------------------------------------------------- streams

def stream_config(spec: StreamSpec) -> api.StreamConfig:
    return api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        description=spec.description,
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType(spec.storage.value),
        discard=api.DiscardPolicy.OLD,
        max_age=spec.max_age_s,
        max_msgs_per_subject=_unlimited(spec.max_msgs_per_subject),
        max_bytes=_unlimited(spec.max_bytes),
        max_msg_size=_unlimited(spec.max_msg_size),
        duplicate_window=spec.duplicate_window_s,
        num_replicas=spec.replicas,
        allow_direct=spec.allow_direct,
    )


def stream_differences(desired: api.StreamConfig, actual: api.StreamConfig) -> list[str]:
    """Managed fields whose value differs, as 'field: actual -> desired'."""
    differences = []
    for name in (
        "description", "storage", "max_age", "max_msgs_per_subject", "max_bytes",
        "max_msg_size", "duplicate_window", "num_replicas", "allow_direct",
    ):
        want, have = getattr(desired, name), getattr(actual, name)
        if _normalise(name, want) != _normalise(name, have):
            differences.append(f"{name}: {_show(have)} -> {_show(want)}")
    if sorted(desired.subjects or []) != sorted(actual.subjects or []):
        differences.append(f"subjects: {actual.subjects} -> {desired.subjects}")
    return differences


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> Change:
    return await _ensure_stream_config(js, "stream", spec.name, stream_config(spec))


async def _ensure_stream_config(js: JetStreamContext, kind: str, display: str, desired: api.StreamConfig) -> Change:
    try:
        info = await js.stream_info(desired.name)
    except NotFoundError:
        await js.add_stream(config=desired)
        return Change(kind, display, Action.CREATED)
    differences = stream_differences(desired, info.config)
    if not differences:
        return Change(kind, display, Action.UNCHANGED)
    frozen = [d for d in differences if d.split(":")[0] in _IMMUTABLE]
    if frozen:
        raise BootstrapError(
            f"{kind} {display}: {'; '.join(frozen)} cannot be changed in place; "
            "keep the existing setting or delete the stream first (its data is lost)"
        )
    # Keep what the server (or KV) set and we do not manage, change only our fields.
    merged = dataclasses.replace(info.config, **{
        f: getattr(desired, f) for f in (
            "subjects", "description", "max_age", "max_msgs_per_subject", "max_bytes",
            "max_msg_size", "duplicate_window", "num_replicas", "allow_direct",
        )
    })
    await js.update_stream(config=merged)
    return Change(kind, display, Action.UPDATED, tuple(differences))


# ---------------------------------------------------------------------------- buckets

def bucket_stream_config(spec: KvSpec) -> api.StreamConfig:
    """The stream behind a KV bucket, as nats-py's create_key_value would make it."""
    return api.StreamConfig(
        name=spec.stream_name,
        subjects=[f"$KV.{spec.bucket}.>"],
        description=spec.description,
        storage=api.StorageType(spec.storage.value),
        max_age=0,
        max_msgs_per_subject=spec.history,
        max_bytes=-1,
        max_msg_size=spec.max_value_size,
        duplicate_window=120,
        num_replicas=spec.replicas,
        allow_direct=True,
    )


async def ensure_bucket(js: JetStreamContext, spec: KvSpec) -> Change:
    try:
        await js.stream_info(spec.stream_name)
    except NotFoundError:
        await _create_bucket(js, spec)
        return Change("kv", spec.bucket, Action.CREATED)
    return await _ensure_stream_config(js, "kv", spec.bucket, bucket_stream_config(spec))


async def _create_bucket(js: JetStreamContext, spec: KvSpec) -> None:
    await js.create_key_value(config=api.KeyValueConfig(
        bucket=spec.bucket,
        description=spec.description,
        history=spec.history,
        storage=api.StorageType(spec.storage.value),
        replicas=spec.replicas,
        max_value_size=spec.max_value_size,
        direct=True,
    ))


# -------------------------------------------------------------------------- consumers

def consumer_config(spec: ConsumerSpec, start: StartPosition | None = None) -> api.ConsumerConfig:
    """``start``: where a consumer re-created by a worker resumes (bootstrap: everything)."""
    return api.ConsumerConfig(
        durable_name=spec.durable,
        name=spec.durable,
        description=spec.description,
        **(deliver_fields(start) if start is not None else {"deliver_policy": api.DeliverPolicy.ALL}),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        filter_subject=spec.filter_subject or None,
    )


_CONSUMER_FIELDS = ("description", "ack_wait", "max_deliver", "max_ack_pending", "filter_subject")


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> Change:
    desired = consumer_config(spec)
    display = f"{spec.stream}/{spec.durable}"
    try:
        info = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        await js.add_consumer(spec.stream, config=desired)
        return Change("consumer", display, Action.CREATED)
    differences = [
        f"{name}: {_show(getattr(info.config, name))} -> {_show(getattr(desired, name))}"
        for name in _CONSUMER_FIELDS
        if _normalise(name, getattr(desired, name)) != _normalise(name, getattr(info.config, name))
    ]
    if not differences:
        return Change("consumer", display, Action.UNCHANGED)
    await js.add_consumer(spec.stream, config=desired)  # same name: the server updates it
    return Change("consumer", display, Action.UPDATED, tuple(differences))


# ---------------------------------------------------------------------------- self-repair

async def create_missing(js: JetStreamContext, layout: JetStreamLayout, name: str, *,
                         start: StartPosition | None = None) -> Change:
    """Create the stream, bucket or durable consumer ``name`` of ``layout`` if it does not
    exist (a consumer's stream first); an existing one is left as it is. ``start``: where a
    re-created consumer begins. Two processes repairing at once both succeed."""
    if (stream := _find(layout.streams, name, lambda s: s.name)) is not None:
        return await _create_stream_if_missing(js, "stream", name, lambda: js.add_stream(config=stream_config(stream)))
    if (bucket := _find(layout.buckets, name, lambda b: (b.bucket, b.stream_name))) is not None:
        return await _create_stream_if_missing(js, "kv", bucket.bucket, lambda: _create_bucket(js, bucket),
                                               stream_name=bucket.stream_name)
    if (consumer := _find(layout.consumers, name, lambda c: c.durable)) is not None:
        await create_missing(js, layout, consumer.stream)
        return await _create_consumer_if_missing(js, consumer, start)
    raise ValueError(f"{name!r} is no stream, bucket or consumer of the JetStream layout")


def _find(items: Iterable[Any], name: str, names: Any) -> Any:
    for item in items:
        known = names(item)
        if name == known or (isinstance(known, tuple) and name in known):
            return item
    return None


async def _create_stream_if_missing(js: JetStreamContext, kind: str, name: str, create: Any, *,
                                    stream_name: str | None = None) -> Change:
    try:
        await js.stream_info(stream_name or name)
        return Change(kind, name, Action.UNCHANGED)
    except NotFoundError:
        pass
    try:
        await create()
    except BadRequestError:  # created meanwhile by another process, with other limits: theirs stand
        await js.stream_info(stream_name or name)
        return Change(kind, name, Action.UNCHANGED)
    return Change(kind, name, Action.CREATED)


async def _create_consumer_if_missing(js: JetStreamContext, spec: ConsumerSpec,
                                      start: StartPosition | None) -> Change:
    display = f"{spec.stream}/{spec.durable}"
    try:
        await js.consumer_info(spec.stream, spec.durable)
        return Change("consumer", display, Action.UNCHANGED)
    except NotFoundError:
        pass
    try:
        await js.add_consumer(spec.stream, config=consumer_config(spec, start))
    except BadRequestError:  # created meanwhile by another replica from another position
        await js.consumer_info(spec.stream, spec.durable)
        return Change("consumer", display, Action.UNCHANGED)
    return Change("consumer", display, Action.CREATED, (f"from {start}",) if start is not None else ())


# ---------------------------------------------------------------------------- helpers

def _unlimited(value: int) -> int:
    """Our 0 means unlimited; JetStream spells it -1."""
    return value if value > 0 else -1


_DURATIONS = frozenset({"max_age", "duplicate_window", "ack_wait"})


def _normalise(field_name: str, value: Any) -> Any:
    """Compare like with like: nats-py hands durations back as float seconds."""
    if isinstance(value, enum.Enum):
        return value.value
    if field_name in _DURATIONS:
        return round(float(value or 0) * _NS)
    if value in (None, ""):
        return None
    return value


def _show(value: Any) -> str:
    return str(value.value if isinstance(value, enum.Enum) else value)


def summarise(changes: Iterable[Change]) -> dict[str, int]:
    counts = {action.value: 0 for action in Action}
    for change in changes:
        counts[change.action.value] += 1
    return counts


__all__ = [
    "Action", "BootstrapError", "Change", "Storage", "bootstrap", "bucket_stream_config",
    "consumer_config", "create_missing", "ensure_bucket", "ensure_consumer", "ensure_stream", "stream_config",
    "stream_differences", "summarise",
]

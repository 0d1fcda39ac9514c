"""The one place that names every NATS subject, JetStream stream, consumer and KV bucket.

Pure data and pure functions: no NATS import. ``mt5fleet.proto.runtime.bootstrap`` applies these
definitions to a server; every other module asks this one for a name instead of
formatting its own. SPEC §2.2 is the contract this module encodes.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# A TradingClient's user id: a DNS label, hence a valid single NATS token.
USER_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A canonical symbol: upper-case letters and digits (EURUSD, XAUUSD, US30, GER40), a
# single NATS token. Brokers' aliases (EURUSD.m) never travel on the wire.
SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9]{2,15}$")

USER_PREFIX = "tc"
SIGNALS_PREFIX = "signals"
MARKET_DATA_PREFIX = "md"
# Rolling correlations of the reference feed, for the operator's correlation pairs.
CORRELATIONS_SUBJECT = "analytics.correlations"
CONFIG_BUCKET = "tc-config"
# Decision records (``decisions.<uid>.<signal key>``): the platform's own audit trail, never
# under ``tc.<uid>.*``, so that no tenant grant or import (all derived from ``Channel``) reaches it.
DECISIONS_PREFIX = "decisions"
# The economic calendar (issue 17): one KV value, the whole calendar, written by the calendar
# worker and read by every adjustment worker and (through its account's imports) every agent.
CALENDAR_BUCKET = "calendar"
CALENDAR_KEY = "events"


class Channel(enum.StrEnum):
    """The per-user subjects ``tc.<uid>.<channel>``."""

    PRICES = "prices"          # agent -> server, ClientPriceStream
    ACCOUNT = "account"        # agent -> server, AccountProfile
    SYMBOLS = "symbols"        # agent -> server, SymbolSpecList
    EXECUTIONS = "executions"  # agent -> server, ExecutionReport
    HEARTBEAT = "heartbeat"    # agent -> server, Heartbeat
    COMMANDS = "commands"      # server -> agent, TradingCommand
    CATCHUP = "catchup"        # agent -> catch-up service: CatchupRequest, replied to with CatchupBatch

    @property
    def from_agent(self) -> bool:
        return self is not Channel.COMMANDS

    @property
    def stored(self) -> bool:
        """Captured by a JetStream stream. A catch-up request is request/reply: no stream
        may capture it, or every request would be stored and answered with a PubAck."""
        return self is not Channel.CATCHUP


class InvalidName(ValueError):
    """A user id or symbol that cannot be a NATS subject token."""


def check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not USER_ID_RE.fullmatch(user_id):
        raise InvalidName(f"user id {user_id!r} is not a DNS label (^[a-z0-9]([-a-z0-9]{{0,61}}[a-z0-9])?$)")
    return user_id


def check_symbol(symbol: str) -> str:
    if not isinstance(symbol, str) or not SYMBOL_RE.fullmatch(symbol):
        raise InvalidName(f"symbol {symbol!r} is not a canonical symbol (^[A-Z][A-Z0-9]{{2,15}}$)")
    return symbol


def user_subject(user_id: str, channel: Channel) -> str:
    return f"{USER_PREFIX}.{check_user_id(user_id)}.{Channel(channel).value}"


def user_wildcard(channel: Channel) -> str:
    """Every user's subject of one channel, e.g. ``tc.*.prices``."""
    return f"{USER_PREFIX}.*.{Channel(channel).value}"


def inbox_prefix(user_id: str) -> str:
    """The agent connects with ``inbox_prefix=_INBOX_<uid>``: replies to its requests land
    under it, and a service answering a user's request replies nowhere else."""
    return f"_INBOX_{check_user_id(user_id)}"


def user_subjects_all(user_id: str) -> str:
    return f"{USER_PREFIX}.{check_user_id(user_id)}.>"


def parse_user_subject(subject: str) -> tuple[str, Channel]:
    """``tc.alice.prices`` -> ("alice", Channel.PRICES); InvalidName for anything else."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] != USER_PREFIX:
        raise InvalidName(f"subject {subject!r} is not tc.<uid>.<channel>")
    try:
        channel = Channel(parts[2])
    except ValueError:
        raise InvalidName(f"subject {subject!r} has unknown channel {parts[2]!r}") from None
    return check_user_id(parts[1]), channel


def signal_subject(symbol: str) -> str:
    return f"{SIGNALS_PREFIX}.{check_symbol(symbol)}"


def signal_key(signal_id: str) -> str:
    """A signal id as one subject token: ids are any printable ASCII, so they may hold
    ``.``, ``*`` or ``>``; 128 bits of SHA-256, the same in every process and release."""
    if not signal_id:
        raise InvalidName("a signal id is required")
    return hashlib.sha256(signal_id.encode()).hexdigest()[:32]


def decision_subject(user_id: str, signal_id: str) -> str:
    """Where the one decision record of (signal, user) is kept; also its ``Nats-Msg-Id``."""
    return f"{DECISIONS_PREFIX}.{check_user_id(user_id)}.{signal_key(signal_id)}"


def decisions_of_user(user_id: str) -> str:
    return f"{DECISIONS_PREFIX}.{check_user_id(user_id)}.*"


def decisions_of_signal(signal_id: str) -> str:
    return f"{DECISIONS_PREFIX}.*.{signal_key(signal_id)}"


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or token not in ("*", have[index]):
            return False
    return len(want) == len(have)


def config_key_subject(user_id: str) -> str:
    """``$KV.tc-config.<uid>``: where a put of the user's ClientConfig is published. Agents
    read it with a plain subscription and a direct get (a KV watch would need a consumer
    create no per-user permission can narrow to one key)."""
    return f"$KV.{CONFIG_BUCKET}.{check_user_id(user_id)}"


def config_stream_name() -> str:
    return f"KV_{CONFIG_BUCKET}"


def calendar_key_subject() -> str:
    """``$KV.calendar.events``: where each put of the calendar is published (read live)."""
    return f"$KV.{CALENDAR_BUCKET}.{CALENDAR_KEY}"


def calendar_stream_name() -> str:
    return f"KV_{CALENDAR_BUCKET}"


def market_data_subject(symbol: str) -> str:
    return f"{MARKET_DATA_PREFIX}.{check_symbol(symbol)}"


def symbol_of(subject: str) -> str:
    """The symbol token of ``signals.<symbol>`` or ``md.<symbol>``."""
    prefix, _, symbol = subject.partition(".")
    if prefix not in (SIGNALS_PREFIX, MARKET_DATA_PREFIX):
        raise InvalidName(f"subject {subject!r} is not signals.<symbol> or md.<symbol>")
    return check_symbol(symbol)


# --------------------------------------------------------------------------- JetStream

class Storage(enum.StrEnum):
    FILE = "file"
    MEMORY = "memory"


@dataclass(frozen=True)
class StreamSpec:
    """What a stream must look like. Durations in seconds, sizes in bytes; 0 = unlimited."""

    name: str
    subjects: tuple[str, ...]
    description: str
    storage: Storage = Storage.FILE
    max_age_s: float = 0
    max_msgs_per_subject: int = 0
    max_bytes: int = 0
    max_msg_size: int = 0
    duplicate_window_s: float = 120
    replicas: int = 1
    allow_direct: bool = True

    def evolve(self, **changes: Any) -> StreamSpec:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class KvSpec:
    bucket: str
    description: str
    history: int = 5
    storage: Storage = Storage.FILE
    replicas: int = 1
    max_value_size: int = 64 * 1024

    @property
    def stream_name(self) -> str:
        return f"KV_{self.bucket}"

    def evolve(self, **changes: Any) -> KvSpec:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer of the fleet (never one per user: see SPEC §2.2)."""

    stream: str
    durable: str
    description: str
    filter_subject: str = ""
    ack_wait_s: float = 30
    max_deliver: int = 20
    max_ack_pending: int = 10_000

    def evolve(self, **changes: Any) -> ConsumerSpec:
        return dataclasses.replace(self, **changes)


# Stream names.
PRICES_STREAM = "TC_PRICES"
ACCOUNT_STREAM = "TC_ACCOUNT"
SYMBOLS_STREAM = "TC_SYMBOLS"
EXECUTIONS_STREAM = "TC_EXECUTIONS"
HEARTBEAT_STREAM = "TC_HEARTBEAT"
COMMANDS_STREAM = "TC_COMMANDS"
SIGNALS_STREAM = "SIGNALS"
MARKET_DATA_STREAM = "MARKET_DATA"
DECISIONS_STREAM = "TC_DECISIONS"

_DAY = 86_400.0
# How long the audit trail is kept: execution reports and the decisions they answer alike.
AUDIT_MAX_AGE_S = 400 * _DAY

DEFAULT_STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        PRICES_STREAM, (user_wildcard(Channel.PRICES),),
        "Latest broker quote batches per user (best effort)",
        storage=Storage.MEMORY, max_age_s=60, max_msgs_per_subject=3, duplicate_window_s=5,
    ),
    StreamSpec(
        ACCOUNT_STREAM, (user_wildcard(Channel.ACCOUNT),),
        "Account snapshots per user: the equity curve",
        max_age_s=90 * _DAY,
    ),
    StreamSpec(
        SYMBOLS_STREAM, (user_wildcard(Channel.SYMBOLS),),
        "Latest broker symbol specifications per user",
        max_msgs_per_subject=1,
    ),
    StreamSpec(
        EXECUTIONS_STREAM, (user_wildcard(Channel.EXECUTIONS),),
        "Execution reports: the audit trail of every command",
        max_age_s=AUDIT_MAX_AGE_S, duplicate_window_s=_DAY,
    ),
    StreamSpec(
        DECISIONS_STREAM, (f"{DECISIONS_PREFIX}.*.*",),
        "Decision records: the adjustment's inputs and output for every (signal, user)",
        max_age_s=AUDIT_MAX_AGE_S, duplicate_window_s=_DAY,
    ),
    StreamSpec(
        HEARTBEAT_STREAM, (user_wildcard(Channel.HEARTBEAT),),
        "Latest agent heartbeat per user",
        storage=Storage.MEMORY, max_age_s=_DAY, max_msgs_per_subject=1, duplicate_window_s=5,
    ),
    StreamSpec(
        COMMANDS_STREAM, (user_wildcard(Channel.COMMANDS),),
        "Adjusted trading commands per user: durability and catch-up after a reconnect",
        max_age_s=7 * _DAY, max_msgs_per_subject=10_000, duplicate_window_s=_DAY,
    ),
    StreamSpec(
        SIGNALS_STREAM, (f"{SIGNALS_PREFIX}.*",),
        "Universal signals from signal engines",
        max_age_s=30 * _DAY, duplicate_window_s=_DAY,
    ),
    StreamSpec(
        MARKET_DATA_STREAM, (f"{MARKET_DATA_PREFIX}.*", CORRELATIONS_SUBJECT),
        "Latest server-computed market data per symbol",
        storage=Storage.MEMORY, max_age_s=_DAY, max_msgs_per_subject=1, duplicate_window_s=5,
    ),
)

LEASES_BUCKET = "worker-leases"

DEFAULT_BUCKETS: tuple[KvSpec, ...] = (
    KvSpec(CONFIG_BUCKET, "Effective ClientConfig per user, written by the operator"),
    KvSpec(CALENDAR_BUCKET, "The economic calendar: high-impact events every worker and agent reads", history=2,
           max_value_size=1_000_000),
    KvSpec(LEASES_BUCKET, "Which adjustment-worker replica owns which user partition", history=1,
           storage=Storage.MEMORY, max_value_size=1024),
)

# Users are split into fixed partitions; each partition has its own durable consumer of
# SIGNALS, and exactly one worker replica (the lease holder) pulls from it. A replica that
# dies leaves its signals unacknowledged on its partitions' consumers for the next owner.
ADJUST_PARTITIONS = 8
ADJUST_CONSUMER_PREFIX = "adjust-p"
EXECUTIONS_CONSUMER = "execution-feedback"
# The catch-up service's replicas share ``tc.*.catchup`` in this queue group: one answers each request.
CATCHUP_QUEUE = "catchup"


def partition_of(user_id: str, partitions: int = ADJUST_PARTITIONS) -> int:
    """A user's partition: stable across processes and releases (CRC-32, not hash())."""
    return zlib.crc32(user_id.encode()) % partitions


def adjust_consumer(partition: int) -> str:
    return f"{ADJUST_CONSUMER_PREFIX}{partition}"


def lease_key(partition: int) -> str:
    return f"partition-{partition}"


# A signal whose delivery was lost (a fetch answer or an ack gone with a NATS node) comes
# back after the ack wait: it must be well inside a signal's life (30 s by default). A
# worker working on one longer than that says so (``in_progress``) every third of it.
ADJUST_ACK_WAIT_S = 5.0

DEFAULT_CONSUMERS: tuple[ConsumerSpec, ...] = (
    *(ConsumerSpec(SIGNALS_STREAM, adjust_consumer(p), f"Adjustment workers, users of partition {p}",
                   ack_wait_s=ADJUST_ACK_WAIT_S) for p in range(ADJUST_PARTITIONS)),
    ConsumerSpec(EXECUTIONS_STREAM, EXECUTIONS_CONSUMER, "Execution feedback: positions, slippage, latency"),
)


@dataclass(frozen=True)
class JetStreamLayout:
    """Everything bootstrap ensures, after configuration is applied."""

    streams: tuple[StreamSpec, ...] = DEFAULT_STREAMS
    buckets: tuple[KvSpec, ...] = DEFAULT_BUCKETS
    consumers: tuple[ConsumerSpec, ...] = DEFAULT_CONSUMERS

    def stream(self, name: str) -> StreamSpec:
        return _by_name(self.streams, name, lambda s: s.name)

    def bucket(self, name: str) -> KvSpec:
        return _by_name(self.buckets, name, lambda b: b.bucket)


def _by_name(items: Iterable[Any], name: str, key: Any) -> Any:
    for item in items:
        if key(item) == name:
            return item
    raise KeyError(name)


_STREAM_FIELDS = {f.name for f in dataclasses.fields(StreamSpec)} - {"name", "subjects", "description"}
_KV_FIELDS = {f.name for f in dataclasses.fields(KvSpec)} - {"bucket", "description"}
_CONSUMER_FIELDS = {f.name for f in dataclasses.fields(ConsumerSpec)} - {"stream", "durable", "description"}


def build_layout(overrides: Mapping[str, Any] | None = None) -> JetStreamLayout:
    """Apply configuration to the defaults.

    ``overrides`` is the parsed TOML of ``mt5fleet nats bootstrap --config``::

        replicas = 3                     # every stream and bucket
        [streams.TC_PRICES]
        max_age_s = 120
        [buckets.tc-config]
        history = 10
        [consumers.adjust-p0]
        max_ack_pending = 20000

    Unknown names or fields raise ValueError naming them: a typo must not be ignored.
    """
    overrides = dict(overrides or {})
    unknown_top = set(overrides) - {"replicas", "streams", "buckets", "consumers"}
    if unknown_top:
        raise ValueError(f"unknown JetStream settings: {sorted(unknown_top)}")
    replicas = overrides.get("replicas")
    if replicas is not None and (not isinstance(replicas, int) or not 1 <= replicas <= 5):
        raise ValueError(f"replicas must be an integer from 1 to 5, got {replicas!r}")
    base = {} if replicas is None else {"replicas": replicas}
    streams = _apply(DEFAULT_STREAMS, overrides.get("streams", {}), base, _STREAM_FIELDS, lambda s: s.name, "stream")
    buckets = _apply(DEFAULT_BUCKETS, overrides.get("buckets", {}), base, _KV_FIELDS, lambda b: b.bucket, "bucket")
    consumers = _apply(
        DEFAULT_CONSUMERS, overrides.get("consumers", {}), {}, _CONSUMER_FIELDS, lambda c: c.durable, "consumer"
    )
    return JetStreamLayout(streams, buckets, consumers)


def _apply(defaults, per_name: Mapping[str, Any], base: dict, allowed: set[str], key, kind: str) -> tuple:
    known = {key(item) for item in defaults}
    unknown = set(per_name) - known
    if unknown:
        raise ValueError(f"unknown {kind}(s) {sorted(unknown)}; known: {sorted(known)}")
    result = []
    for item in defaults:
        changes = {**base, **per_name.get(key(item), {})}
        bad = set(changes) - allowed
        if bad:
            raise ValueError(f"{kind} {key(item)}: unknown setting(s) {sorted(bad)}; allowed: {sorted(allowed)}")
        if "storage" in changes:
            changes["storage"] = Storage(changes["storage"])
        result.append(_checked(item.evolve(**changes)))
    return tuple(result)


def _checked(item):
    """Refuse what the server would refuse, before anything is sent."""
    if isinstance(item, StreamSpec):
        if item.max_age_s and item.duplicate_window_s > item.max_age_s:
            raise ValueError(
                f"stream {item.name}: duplicate_window_s ({item.duplicate_window_s:g}) "
                f"cannot exceed max_age_s ({item.max_age_s:g})"
            )
        if item.max_age_s < 0 or item.max_msgs_per_subject < 0 or item.max_bytes < 0:
            raise ValueError(f"stream {item.name}: limits must be >= 0 (0 means unlimited)")
    if isinstance(item, KvSpec) and not 1 <= item.history <= 64:
        raise ValueError(f"bucket {item.bucket}: history must be 1..64, got {item.history}")
    return item

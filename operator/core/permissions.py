"""What one TradingClient's NATS user may do: exactly what its agent does, nothing else.

Pure: (user id, the ``md.<symbol>`` its tier may read, the tier's NATS limits) in, a frozen
:class:`UserAccess` out. Every subject is an allow-list entry; NATS refuses the rest. The
agent (``mt5fleet.client``) needs, and gets:

* publish ``tc.<uid>.prices|account|symbols|executions|heartbeat``: JetStream publishes
  whose acks come back on the agent's inbox (``inbox_prefix="_INBOX_<uid>"``);
* publish ``tc.<uid>.catchup``: its requests to the platform's catch-up service, which
  takes the user from this subject (only this tenant's account imports it);
* subscribe ``tc.<uid>.commands`` (the live plain subscription) and ``_INBOX_<uid>.>``
  (request replies, JetStream acks, catch-up pages) only;
* ``md.<symbol>`` of its tier;
* its own ``tc-config`` key: see :func:`config_grants` for why that is a plain subscription
  to ``$KV.tc-config.<uid>`` plus a direct get of that one subject, not ``kv.watch``.

Nothing else: no ``$JS.API.INFO``, no stream info or stream management, no consumer API at
all (create, next, info, delete), no other user's subjects, no ``_INBOX.>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mt5fleet.operator.core.nats_claims import NO_LIMIT, NatsLimits, Permission, UserPermissions
from mt5fleet.proto import subjects

JS_API = "$JS.API"
UNLIMITED = NatsLimits()
# The subscriptions an agent holds besides market data: live commands, nats-py's inbox
# multiplexer (request replies and catch-up pages), the live config subscription, the live
# economic calendar.
FIXED_SUBSCRIPTIONS = 4


@dataclass(frozen=True)
class UserAccess:
    user_id: str
    permissions: UserPermissions
    limits: NatsLimits
    md_symbols: tuple[str, ...] = ()

    @property
    def tenant_permissions(self) -> UserPermissions:
        """The grants of the user inside its own tenant account: the same, but ``md.*`` for
        its md symbols. There the account's imports alone decide which symbols arrive (only
        its tier's), so a symbol or tier change re-signs the account and never the user's
        JWT, and a running agent is not disconnected by it."""
        md = f"{subjects.MARKET_DATA_PREFIX}."
        subscribe = tuple(dict.fromkeys(f"{md}*" if grant.startswith(md) else grant for grant in self.subscribe))
        return UserPermissions(pub=self.permissions.pub, sub=Permission(allow=subscribe))

    @property
    def publish(self) -> tuple[str, ...]:
        return self.permissions.pub.allow

    @property
    def subscribe(self) -> tuple[str, ...]:
        return self.permissions.sub.allow


def user_access(user_id: str, md_symbols: Iterable[str], limits: NatsLimits = UNLIMITED) -> UserAccess:
    """``limits``: the tier's per-connection limits, carried into the JWT as they are."""
    user_id, md_symbols = subjects.check_user_id(user_id), tuple(md_symbols)
    md = sorted({subjects.market_data_subject(symbol) for symbol in md_symbols})
    needed = FIXED_SUBSCRIPTIONS + len(md)
    if limits.subs != NO_LIMIT and limits.subs < needed:
        raise ValueError(f"user {user_id}: the tier allows {limits.subs} subscriptions, "
                         f"the agent needs {needed} ({len(md)} md symbols + {FIXED_SUBSCRIPTIONS})")
    config_pub, config_sub = config_grants(user_id)
    calendar_pub, calendar_sub = calendar_grants()
    publish = (*agent_publish_subjects(user_id), *config_pub, *calendar_pub)
    subscribe = (subjects.user_subject(user_id, subjects.Channel.COMMANDS), inbox_subjects(user_id), *md,
                 *config_sub, *calendar_sub)
    return UserAccess(
        user_id=user_id,
        permissions=UserPermissions(pub=Permission(allow=publish), sub=Permission(allow=subscribe)),
        limits=limits, md_symbols=tuple(sorted(set(md_symbols))))


def agent_publish_subjects(user_id: str) -> tuple[str, ...]:
    """Its own ``tc.<uid>.<channel>`` of every channel it sends on, the catch-up request included."""
    return tuple(subjects.user_subject(user_id, channel) for channel in subjects.Channel if channel.from_agent)


def inbox_prefix(user_id: str) -> str:
    """The agent connects with ``inbox_prefix=_INBOX_<uid>`` so its replies are its own."""
    return subjects.inbox_prefix(user_id)


def inbox_subjects(user_id: str) -> str:
    return f"{inbox_prefix(user_id)}.>"


def config_key_subject(user_id: str) -> str:
    """``$KV.tc-config.<uid>``: the subject a KV put of this user's key is published on."""
    return subjects.config_key_subject(user_id)


def config_stream() -> str:
    return subjects.JetStreamLayout().bucket(subjects.CONFIG_BUCKET).stream_name


def calendar_grants() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(publish, subscribe) for reading the economic calendar's one key, the way the config
    key is read (see ``config_grants``): its puts live, and a direct get of it on (re)connect."""
    key = subjects.calendar_key_subject()
    return (f"{JS_API}.DIRECT.GET.{subjects.calendar_stream_name()}.{key}",), (key,)


def config_grants(user_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(publish, subscribe) for reading this user's own ``tc-config`` key, and only it.

    nats-py's ``js.key_value(bucket)`` asks ``STREAM.INFO.KV_tc-config`` and
    ``kv.watch(key)`` creates an *ephemeral, unnamed* ordered push consumer through
    ``$JS.API.CONSUMER.CREATE.KV_tc-config`` (no name, no filter in the subject; then
    ``CONSUMER.INFO.KV_tc-config.<random name>`` and flow-control replies to
    ``$JS.FC.KV_tc-config.<random name>.*``). A grant on that create subject cannot pin
    the filter: the same request with the filter ``$KV.tc-config.<other>`` would deliver
    every other user's ClientConfig (and ``STREAM.INFO`` with ``subjects_filter`` would
    list every user id). There is no safe grant for ``kv.watch`` as nats-py implements it.

    The safe equivalent, one subject each and both naming the key:
    * subscribe ``$KV.tc-config.<uid>``: every put/delete of the key, live (a KV put is an
      ordinary publish on that subject; no consumer per agent, as for commands);
    * publish ``$JS.API.DIRECT.GET.KV_tc-config.$KV.tc-config.<uid>``: the latest value on
      (re)connect, ``js.get_msg("KV_tc-config", subject=..., direct=True)``; the server
      answers a get whose subject names the key with that key's last message only.
    """
    key = config_key_subject(user_id)
    return (f"{JS_API}.DIRECT.GET.{config_stream()}.{key}",), (key,)


__all__ = [
    "FIXED_SUBSCRIPTIONS", "UserAccess", "agent_publish_subjects", "calendar_grants", "config_grants",
    "config_key_subject",
    "config_stream", "inbox_prefix", "inbox_subjects", "user_access",
]

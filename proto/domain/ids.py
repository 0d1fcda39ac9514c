"""Identifiers that cross process boundaries: command ids and their MT5 magic numbers.

A command id is deterministic per (signal, user), so a redelivered signal or a restarted
worker produces the same id, and JetStream's dedupe window drops the second publish. It
must also fit MT5's order comment (31 characters; some brokers keep fewer), where a
restarted agent looks for what it already did. Brokers may rewrite comments (``[sl 1.1]``)
but never the magic number, so the magic is derived from the id too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

COMMAND_ID_PREFIX = "mf1"
COMMAND_ID_RE = re.compile(r"^mf1[0-9a-v]{24}$")
MT5_COMMENT_MAX = 31


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def command_id_for(signal_id: str, user_id: str, action: str = "") -> str:
    """27 characters: 'mf1' + 120 bits of SHA-256 in base32hex (lower case). 15 bytes are
    exactly 24 base32 digits, most significant first, with no padding."""
    return COMMAND_ID_PREFIX + base64.b32hexencode(_digest(signal_id, user_id, action)[:15]).decode().lower()


def stop_out_key(trading_day_ms: int) -> str:
    """What the close-all an agent sends itself at its daily stop-out is keyed by: the
    trading day (its 17:00 New York start), so one stop-out closes everything once a day."""
    return f"stop-out:{trading_day_ms}"


def stop_out_close_all_id(user_id: str, trading_day_ms: int) -> str:
    """The id of that close-all. The adjustment worker recognises its execution report by
    it: the report is how a stop-out shows on the wire."""
    return command_id_for(stop_out_key(trading_day_ms), user_id, "close-all")


def magic_for(command_id: str) -> int:
    """A positive 63-bit MT5 magic number for the command (MT5 magic is ulong)."""
    return int.from_bytes(_digest("magic", command_id)[:8], "big") >> 1


def is_command_id(text: str) -> bool:
    return bool(COMMAND_ID_RE.fullmatch(text))


def report_message_id(command_id: str, key: bytes, kind: str = "report") -> str:
    """The ``Nats-Msg-Id`` of an agent's execution report: ``<command id>.<kind>.<tag>``.

    JetStream dedupes per stream, and every tenant's reports share one stream: with the
    bare command id (public: derived from the signal id every tenant sees) as the message
    id, one tenant could pre-publish another's next id and get that report dropped as a
    duplicate. The tag is an HMAC under the agent's own secret key, so the id stays the
    same on every retry of this agent and cannot be guessed by anyone else."""
    tag = hmac.new(key, f"{command_id}.{kind}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{command_id}.{kind}.{tag}"


def command_id_of_report(message_id: str) -> tuple[str, str]:
    """(command id, kind) of a ``report_message_id``."""
    command_id, kind, _ = message_id.split(".", 2)
    return command_id, kind

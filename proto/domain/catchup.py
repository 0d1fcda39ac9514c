"""Catch-up after a reconnect: what an agent asks the catch-up service, and one page back.

Conventions: see the package (``mt5fleet.proto.domain``). The commands stay the bytes the
stream stored: the agent's command pipeline decodes and validates each one by itself, so
one bad stored command never costs the good ones of its page.
"""

from __future__ import annotations

from dataclasses import dataclass

# The most commands one page may hold; the service's default page is smaller.
MAX_PAGE_COMMANDS = 500


@dataclass(frozen=True)
class CatchupQuery:
    """One page wanted: the first (``after_sequence`` 0: from ``since_ms``) or the next."""

    since_ms: int               # unix ms; 0: from the oldest stored command
    after_sequence: int = 0     # TC_COMMANDS sequence the previous page ended at
    max_commands: int = 0       # 0: the service's default


@dataclass(frozen=True)
class CatchupPage:
    commands: tuple[bytes, ...] = ()
    sequences: tuple[int, ...] = ()   # the stream sequence of each command
    last_sequence: int = 0            # the cursor for the next page (0: nothing read)
    done: bool = False                # nothing stored after this page
    error: str = ""                   # the request was refused or the store unreadable

    @classmethod
    def refused(cls, reason: str) -> CatchupPage:
        return cls(error=reason)

"""Paging decisions of the catch-up service: how many commands and bytes one page holds.

Pure: the service (``workers.app.catchup_service``) reads the stream and asks this module
whether the next stored command still fits. A page always takes its first command, so the
cursor moves even past a command bigger than the byte budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mt5fleet.proto.domain.catchup import MAX_PAGE_COMMANDS, CatchupPage

DEFAULT_PAGE_COMMANDS = 100
# Well under the smallest tier's payload limit (free: 32 KB, operator/core/tiers.py): a
# page is a reply the agent must be able to receive whatever its tier.
PAGE_BYTES = 16 * 1024
# What protobuf adds per command besides its bytes: two tags, a length and a sequence varint.
PER_COMMAND_OVERHEAD = 16


def page_commands(requested: int, default: int = DEFAULT_PAGE_COMMANDS) -> int:
    """The page size for a request: 0 asks for the default; never above the page limit."""
    return min(requested or default, MAX_PAGE_COMMANDS)


@dataclass
class PageBuilder:
    max_commands: int
    max_bytes: int = PAGE_BYTES
    commands: list[bytes] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)
    size: int = 0

    @property
    def full(self) -> bool:
        return len(self.commands) >= self.max_commands

    def fits(self, data: bytes) -> bool:
        if not self.commands:
            return True
        return not self.full and self.size + len(data) + PER_COMMAND_OVERHEAD <= self.max_bytes

    def add(self, sequence: int, data: bytes) -> None:
        self.commands.append(data)
        self.sequences.append(sequence)
        self.size += len(data) + PER_COMMAND_OVERHEAD

    def page(self, *, done: bool) -> CatchupPage:
        return CatchupPage(commands=tuple(self.commands), sequences=tuple(self.sequences),
                           last_sequence=self.sequences[-1] if self.sequences else 0, done=done)

"""What an applier did: the vocabulary of every ``ensure_*``."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Change(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


@dataclass(frozen=True)
class Applied:
    """One resource an applier looked after, for events and logs (never secret values)."""
    resource: str
    change: Change
    detail: str = ""

    @property
    def changed(self) -> bool:
        return self.change is not Change.UNCHANGED

    def __str__(self) -> str:
        return f"{self.resource} {self.change.value}" + (f" ({self.detail})" if self.detail else "")

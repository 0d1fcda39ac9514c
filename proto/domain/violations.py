"""Why an inbound message, or one entry of a batch, was refused."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Violation:
    """Why one field of an inbound message was refused.

    ``field`` is a path into the message ("stop_loss", "prices[3].ask"); ``reason`` says
    in plain words what is wrong, with the bad value.
    """

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"

"""The decision record of one (signal, user): what the adjustment read and what it decided.

``decide`` runs ``adjust`` on a view of the user's state that remembers every entry read
(the signal's quote and spec, each conversion quote the sizing looked up, the target
signal's positions), and keeps exactly those as the inputs. So the record stays small (no
copy of a user's other symbols), names the conversion rates actually used, and still holds
everything needed to recompute: ``recompute(decision.inputs)`` is ``adjust`` again, on the
inputs alone, and gives the same commands.

Pure: no I/O, no clock, no protobuf (``mt5fleet.workers.adapters.decisions`` encodes it).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from mt5fleet.proto.domain.evolve import evolve
from mt5fleet.proto.domain.market import Quote, SymbolSpecInfo
from mt5fleet.proto.domain.trading import Command, Signal
from mt5fleet.workers.core.adjust import DEFAULT_COMMAND_TTL_MS, Adjusted, Result, Skip, adjust
from mt5fleet.workers.core.policy import UserState
from mt5fleet.workers.core.sizing_inputs import SizingInputs

# The skip label of a decision the adjustment could not make (a user's odd state raised);
# not a SkipReason: it is a defect to look into, not a rule that applied.
ERROR = "error"

K = TypeVar("K")
V = TypeVar("V")


class ReadLog(Mapping[K, V]):
    """A read-only view of a mapping that remembers the entries looked up through it.

    ``get``, ``in`` and ``[]`` of a present key record it (a missing key is reproduced by
    its absence); iterating records everything, since then everything may have mattered.
    """

    def __init__(self, source: Mapping[K, V]) -> None:
        self._source = source
        self.read: dict[K, V] = {}

    def __getitem__(self, key: K) -> V:
        value = self._source[key]
        self.read[key] = value
        return value

    def __iter__(self) -> Iterator[K]:
        self.read.update(self._source)
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)


@dataclass(frozen=True, slots=True)
class DecisionInputs:
    """Everything ``adjust`` read: the signal, the instant, and the user's state reduced to
    the entries it looked at (``state``'s mappings are plain dicts)."""

    signal: Signal
    state: UserState
    decided_at_ms: int
    command_ttl_ms: int = DEFAULT_COMMAND_TTL_MS

    @property
    def user_id(self) -> str:
        return self.state.user_id

    @property
    def quote(self) -> Quote | None:
        """The user's quote of the signal's symbol."""
        return self.state.quotes.get(self.signal.symbol)

    @property
    def spec(self) -> SymbolSpecInfo | None:
        return self.state.specs.get(self.signal.symbol)

    @property
    def conversion_quotes(self) -> tuple[Quote, ...]:
        """Quotes read besides the signal's own: the rates that converted the tick value."""
        return tuple(q for symbol, q in sorted(self.state.quotes.items()) if symbol != self.signal.symbol)

    @property
    def quote_age_ms(self) -> int | None:
        quote = self.quote
        return None if quote is None else self.decided_at_ms - quote.time_ms


@dataclass(frozen=True, slots=True)
class Decision:
    """The inputs and the output: the command(s), or the skip (``skip_reason`` set), and
    the figures a lot size was computed from (``sizing``: derived, kept to be read)."""

    inputs: DecisionInputs
    commands: tuple[Command, ...] = ()
    skip_reason: str = ""
    skip_detail: str = ""
    notes: tuple[str, ...] = ()
    sizing: SizingInputs | None = None

    @property
    def signal_id(self) -> str:
        return self.inputs.signal.signal_id

    @property
    def user_id(self) -> str:
        return self.inputs.user_id

    @property
    def skipped(self) -> bool:
        return bool(self.skip_reason)


def decide(signal: Signal, user: UserState, now_ms: int, *,
           command_ttl_ms: int = DEFAULT_COMMAND_TTL_MS) -> Decision:
    """``adjust`` for one user, with the inputs it read and its output. A user whose state
    makes the adjustment raise (a nonsense number, a missing entry) gets an ``error``
    decision, so one user's odd state never costs the others their commands."""
    quotes, specs = ReadLog(user.quotes), ReadLog(user.specs)
    positions, volumes = ReadLog(user.positions_by_signal), ReadLog(user.position_volumes)
    watched = evolve(user, quotes=quotes, specs=specs, positions_by_signal=positions,
                                  position_volumes=volumes)
    try:
        result: Result | str = adjust(signal, watched, now_ms, command_ttl_ms=command_ttl_ms)
    except (ValueError, KeyError, ArithmeticError) as exc:
        result = f"{type(exc).__name__}: {exc}"
    state = evolve(user, quotes=dict(quotes.read), specs=dict(specs.read),
                                positions_by_signal=dict(positions.read), position_volumes=dict(volumes.read))
    return decision_of(DecisionInputs(signal, state, now_ms, command_ttl_ms), result)


def decision_of(inputs: DecisionInputs, result: Result | str) -> Decision:
    """A decision from its inputs and ``adjust``'s result (a string: the error that stopped it)."""
    if isinstance(result, str):
        return Decision(inputs, skip_reason=ERROR, skip_detail=result)
    if isinstance(result, Skip):
        return Decision(inputs, skip_reason=result.reason.value, skip_detail=result.detail, sizing=result.sizing)
    assert isinstance(result, Adjusted)
    return Decision(inputs, commands=result.commands, notes=result.notes, sizing=result.sizing)


def recompute(inputs: DecisionInputs) -> Result:
    """``adjust`` again on a record's inputs alone: the same commands (or skip) as then."""
    return adjust(inputs.signal, inputs.state, inputs.decided_at_ms, command_ttl_ms=inputs.command_ttl_ms)


def spec_version(spec: SymbolSpecInfo) -> str:
    """A short digest of every field of a symbol spec: equal versions, equal specs. The
    agent sends no version of its own; this one shows when a broker changed a symbol."""
    text = "|".join(f"{f.name}={getattr(spec, f.name)!r}" for f in dataclasses.fields(spec))
    return hashlib.sha256(text.encode()).hexdigest()[:12]

"""``evolve``: ``dataclasses.replace`` for the hot path.

``dataclasses.replace`` looks every field up again on each call (its ``fields()`` scan, the
``_FIELD`` kind checks, a keyword dict). The adjustment copies a frozen value 7-8 times per
user and signal, which made ``replace`` a quarter of a fan-out's CPU (issue 15, cProfile in
docs/performance.md). ``evolve`` keeps each class's init field names once and calls the
constructor positionally, so ``__post_init__`` checks still run, as with ``replace``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_INIT_FIELDS: dict[type, tuple[str, ...]] = {}


def evolve(obj: T, **changes: Any) -> T:
    """A copy of the dataclass instance ``obj`` with ``changes`` applied."""
    cls = type(obj)
    names = _INIT_FIELDS.get(cls)
    if names is None:
        names = _INIT_FIELDS[cls] = _init_fields(cls)
    copy = cls(*[changes.pop(name) if name in changes else getattr(obj, name) for name in names])
    if changes:
        raise TypeError(f"{cls.__name__} has no init field(s) {', '.join(sorted(changes))}")
    return copy


def _init_fields(cls: type) -> tuple[str, ...]:
    fields = dataclasses.fields(cls)   # raises TypeError for a non-dataclass, as replace does
    if any(not f.init for f in fields):
        # replace() refuses a change to such a field and rebuilds it in __post_init__;
        # positional construction would not know where it goes. None of ours has one.
        raise TypeError(f"evolve does not handle {cls.__name__}: it has init=False fields")
    return tuple(f.name for f in fields)

"""Where a long run's Python memory goes (soak ``--heap-top``): the live objects counted by type
when the platform runs and again at the end, and the types that grew most (count and shallow
size). Counting what the cyclic GC tracks costs a few seconds at each end and nothing in
between, unlike ``tracemalloc``, which slowed every allocation so much that the platform's
adjustment replicas missed their lease renewals and the run never started."""

from __future__ import annotations

import gc
import sys
from collections import Counter


def _census() -> tuple[Counter, Counter]:
    counts: Counter = Counter()
    sizes: Counter = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return counts, sizes


class HeapGrowth:
    def __init__(self) -> None:
        self.base: tuple[Counter, Counter] | None = None

    def mark(self) -> None:
        self.base = _census()

    def top(self, n: int) -> list[str]:
        """The ``n`` types whose shallow size grew most since ``mark``:
        ``type: +KiB (+count, now count)``."""
        if self.base is None:
            return []
        (counts0, sizes0), (counts1, sizes1) = self.base, _census()
        grown = sorted(sizes1, key=lambda name: sizes1[name] - sizes0.get(name, 0), reverse=True)[:n]
        return [f"{name}: {(sizes1[name] - sizes0.get(name, 0)) / 1024:+.0f} KiB "
                f"({counts1[name] - counts0.get(name, 0):+d}, now {counts1[name]})" for name in grown]

"""Where a long run's Python memory goes: ``tracemalloc`` snapshots compared (soak
``--heap-top``). Started before the platform, marked once it runs, compared at the end:
the lines whose allocations grew most, with their size and count. Tracing slows every
allocation, so it is for a diagnostic run, not for the run whose figures are quoted."""

from __future__ import annotations

import tracemalloc


class HeapGrowth:
    def __init__(self, frames: int = 8) -> None:
        tracemalloc.start(frames)
        self.base: tracemalloc.Snapshot | None = None

    def mark(self) -> None:
        self.base = self._snapshot()

    def top(self, n: int) -> list[str]:
        """The ``n`` allocation sites that grew most since ``mark``, innermost project
        frame first (``file:line: +size (+count)``)."""
        if self.base is None:
            return []
        growth = self._snapshot().compare_to(self.base, "traceback")
        return [f"{_where(stat.traceback)}: {stat.size_diff / 1024:+.0f} KiB ({stat.count_diff:+d} blocks)"
                for stat in growth[:n]]

    @staticmethod
    def _snapshot() -> tracemalloc.Snapshot:
        return tracemalloc.take_snapshot().filter_traces([
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>")])


def _where(trace: tracemalloc.Traceback) -> str:
    """The allocating line and the project lines that led to it (most recent last)."""
    frames = [f"{f.filename.rsplit('/', 2)[-2]}/{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in trace]
    return " < ".join(reversed(frames[-4:]))

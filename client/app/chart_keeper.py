"""The status page's charts across restarts: restored from the data folder when the agent
starts, saved every ``every_s`` and when it stops. A file that cannot be used is said once
(the log, the status page's notes), counted (``mt5fleet_agent_chart_history_unusable``)
and ignored: the charts start empty, the agent runs on. A save the disk refuses is tried
again next round; the charts are a convenience, never a reason to hold anything else."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from mt5fleet.client.adapters import chart_file
from mt5fleet.client.adapters.disk import DiskUnavailable
from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.client.core.history import ChartHistory, HistoryFormatError

log = logging.getLogger("mt5fleet.agent.charts")

SAVE_EVERY_S = 60.0


class ChartKeeper:
    def __init__(self, charts: ChartHistory, path: Path, metrics: AgentMetrics) -> None:
        self.charts, self.path, self.metrics = charts, path, metrics
        self.notes: tuple[str, ...] = ()
        self.save_error = ""

    def restore(self) -> int:
        """The samples restored (0: none, or an unusable file, reported and counted)."""
        try:
            snapshot = chart_file.load(self.path)
            if snapshot is None:
                return 0
            try:
                kept = self.charts.restore(snapshot)
            except HistoryFormatError as exc:
                raise chart_file.unusable(self.path, str(exc)) from None
        except chart_file.ChartFileUnusable as exc:
            self.metrics.chart_history_unusable.inc()
            self.notes = (str(exc),)
            log.warning("%s", exc)
            return 0
        log.info("restored %d chart samples from %s", kept, self.path)
        return kept

    async def save(self) -> None:
        """Off the event loop: the file can be a few MB."""
        snapshot = self.charts.snapshot()
        try:
            await asyncio.to_thread(chart_file.save, self.path, snapshot)
        except DiskUnavailable as exc:
            if str(exc) != self.save_error:
                log.warning("%s (tried again in %.0f s)", exc, SAVE_EVERY_S)
            self.save_error = str(exc)
            return
        self.save_error = ""

"""The agent's account guard at work: the watermarks kept on disk, advanced with every
account reading, the close-alls that the pure ``core.guard`` decides submitted as local
commands (through the same exactly-once pipeline as the server's), and the risk decision
for each command from what the terminal shows at that moment."""

from __future__ import annotations

import logging
from pathlib import Path

from mt5fleet.client.adapters import watermarks_file
from mt5fleet.client.adapters.disk import DiskUnavailable
from mt5fleet.client.adapters.execution import Executor
from mt5fleet.client.adapters.terminal import Terminal
from mt5fleet.client.core import guard, risk
from mt5fleet.client.core.effective import EffectiveConfig
from mt5fleet.client.core.guard import CloseAll
from mt5fleet.client.core.watermarks import Watermarks
from mt5fleet.proto.domain.trading import Command
from mt5fleet.proto.runtime.calendar_follow import CalendarBoard
from mt5fleet.proto.v1 import commands_pb2

log = logging.getLogger("mt5fleet.agent.guard")

# A close-all the agent decided itself stays valid this long in the pipeline.
CLOSE_ALL_TTL_MS = 600_000


class AccountGuard:
    """Owns the watermarks (day start, peak, stop-out, weekend close)."""

    def __init__(self, *, user_id: str, path: Path, terminal: Terminal, executor: Executor,
                 news: CalendarBoard | None = None) -> None:
        self.user_id = user_id
        self.news = news or CalendarBoard()   # the platform's economic calendar (issue 17)
        self.path = path
        self.terminal = terminal
        self.executor = executor
        self.marks: Watermarks = watermarks_file.load(path)
        self._unsaved = False  # the marks in memory are newer than the file (the disk refused)

    def observe(self, equity: float, now_ms: int, config: EffectiveConfig) -> list[bytes]:
        """Advance the watermarks with this equity; the close-all commands to submit, if any."""
        step = guard.guard_account(self.marks, config.limits, auto_close_friday=config.auto_close_friday,
                                   equity=equity, now_ms=now_ms)
        if step.marks != self.marks or self._unsaved:
            self.marks = step.marks
            self._save()
        for close in step.closes:
            log.warning("%s; closing all positions", close.reason)
        return [self._close_all_command(close, now_ms) for close in step.closes]

    def _save(self) -> None:
        """The marks hold in memory whatever the disk says; a refused save is tried again
        with the next reading, and said once."""
        try:
            watermarks_file.save(self.path, self.marks)
        except DiskUnavailable as exc:
            if not self._unsaved:
                log.warning("%s; the watermarks stay in memory until it can be written", exc)
            self._unsaved = True
            return
        self._unsaved = False

    def _close_all_command(self, close: CloseAll, now_ms: int) -> bytes:
        command = commands_pb2.TradingCommand(
            command_id=close.command_id(self.user_id), user_id=self.user_id, type=commands_pb2.CLOSE_ALL,
            reason=close.reason, created_at=now_ms, expires_at=now_ms + CLOSE_ALL_TTL_MS)
        return command.SerializeToString()

    def decide(self, command: Command, at_ms: int, limits: risk.RiskLimits) -> risk.Decision:
        """On the MT5 thread: the rules of ``risk.check`` against the live account and quote."""
        account = self.terminal.account_info()
        positions = self.terminal.positions()
        view = self.executor.view(command.symbol) if command.symbol else None
        context = guard.risk_context(
            self.marks, at_ms=at_ms, equity=account.equity, balance=account.balance,
            position_symbols=[p.symbol for p in positions], spec=view.spec if view else None,
            bid=view.bid if view else 0.0, ask=view.ask if view else 0.0, netting=not self.executor.hedging,
            calendar=self.news.current, news_window=self.news.current.window,
            account_company=str(getattr(account, "company", "") or ""),
            account_server=str(getattr(account, "server", "") or ""))
        return risk.check(command, limits, context)

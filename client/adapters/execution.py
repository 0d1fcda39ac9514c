"""Carrying out one checked command in the terminal. Runs on the agent's MT5 thread.

The pure parts (requests, outcomes, risk) live in ``orders`` and ``risk``; this module only
reads what they need from the terminal and sends what they build. One requote is retried
at a fresh price; "market closed" is never retried.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mt5fleet.client.adapters.terminal import Terminal, TerminalError, TerminalUnavailable
from mt5fleet.client.core import mt5_constants as mt5
from mt5fleet.client.core import orders
from mt5fleet.client.core.orders import Found, Outcome
from mt5fleet.proto.domain.market import SymbolSpecInfo
from mt5fleet.proto.domain.trading import Command, CommandType

log = logging.getLogger("mt5fleet.agent.execution")


@dataclass(frozen=True)
class BrokerView:
    """What the terminal says right now about one symbol."""

    spec: SymbolSpecInfo
    bid: float
    ask: float
    time_ms: int  # UTC
    execution_mode: int


def spec_from_info(canonical: str, info: Any) -> SymbolSpecInfo:
    return SymbolSpecInfo(
        symbol=canonical, broker_symbol=info.name, digits=info.digits, point=info.point,
        contract_size=info.trade_contract_size, tick_size=info.trade_tick_size, tick_value=info.trade_tick_value,
        volume_min=info.volume_min, volume_max=info.volume_max, volume_step=info.volume_step,
        stops_level=info.trade_stops_level, freeze_level=info.trade_freeze_level, filling_modes=info.filling_mode,
        trade_mode=info.trade_mode, currency_base=info.currency_base, currency_profit=info.currency_profit,
        currency_margin=info.currency_margin, spread_points=info.spread, trade_calc_mode=info.trade_calc_mode,
    )


class Executor:
    def __init__(self, terminal: Terminal, *, default_deviation: int = orders.DEFAULT_DEVIATION_POINTS) -> None:
        self.terminal = terminal
        self.default_deviation = default_deviation
        self.symbol_map: Mapping[str, str] = {}
        self.hedging = True
        self._sent = False  # an order_send of the command being executed was attempted

    # ---------------------------------------------------------------- reads
    def view(self, canonical: str) -> BrokerView | None:
        broker = self.symbol_map.get(canonical)
        if broker is None:
            return None
        info = self.terminal.symbol_info(broker)
        tick = self.terminal.tick(broker)
        if info is None or tick is None:
            return None
        return BrokerView(spec_from_info(canonical, info), tick.bid, tick.ask, tick.time_ms, info.trade_exemode)

    def refresh_account_mode(self) -> Any:
        account = self.terminal.account_info()
        self.hedging = account.margin_mode == mt5.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING
        return account

    # ---------------------------------------------------------------- commands
    def execute(self, cmd: Command) -> Outcome:
        """The outcome; ``NothingSent`` when the terminal dropped before any order of the
        command was sent (safe to execute again), ``TerminalUnavailable`` when it dropped
        after one was (the outcome is unknown: look in the terminal before deciding)."""
        self._sent = False
        try:
            return self._dispatch(cmd)
        except TerminalUnavailable as exc:
            if self._sent:
                raise
            raise NothingSent(exc.call, exc.code, exc.description) from exc

    def _dispatch(self, cmd: Command) -> Outcome:
        if cmd.type is CommandType.OPEN_POSITION:
            return self._open(cmd)
        if cmd.type is CommandType.CLOSE_POSITION:
            return self._close(cmd)
        if cmd.type is CommandType.MODIFY_POSITION:
            return self._modify(cmd)
        return self._close_all(cmd)

    def _open(self, cmd: Command) -> Outcome:
        view = self._view_or_raise(cmd.symbol)
        result = self._send_open(cmd, view)
        if result.may_retry_at_fresh_price:
            log.info("requote for %s, retrying once at a fresh price", cmd.command_id)
            result = self._send_open(cmd, self._view_or_raise(cmd.symbol))
        return result

    def _send_open(self, cmd: Command, view: BrokerView) -> Outcome:
        request = orders.open_request(cmd, broker_symbol=view.spec.broker_symbol, tick_bid=view.bid,
                                      tick_ask=view.ask, spec=view.spec, default_deviation=self.default_deviation,
                                      execution_mode=view.execution_mode)
        return self._send(cmd, request, view.spec)

    def _close(self, cmd: Command) -> Outcome:
        view = self._view_or_raise(cmd.symbol) if cmd.symbol else None
        positions = self.terminal.positions(view.spec.broker_symbol if view else None)
        targets = orders.targets(cmd, positions)
        if not targets:
            return Outcome.no_trade("REJECTED", f"no open position matches ticket {cmd.position_ticket} / "
                                                f"command {cmd.target_command_id}")
        if view is None:
            view = self._view_or_raise(self._canonical(targets[0].symbol))
        fill = orders.filling_for(view.spec.filling_modes, view.execution_mode)
        deviation = cmd.max_deviation_points or self.default_deviation
        requests = orders.close_requests(cmd, targets, tick_bid=view.bid, tick_ask=view.ask, hedging=self.hedging,
                                         filling=fill, default_deviation=deviation)
        return combine([self._send(cmd, request, view.spec) for request in requests])

    def _modify(self, cmd: Command) -> Outcome:
        candidates = [*self.terminal.positions(), *self.terminal.orders()]
        targets = orders.targets(cmd, candidates)
        if not targets:
            return Outcome.no_trade("REJECTED", f"no position or order matches ticket {cmd.position_ticket} / command "
                            f"{cmd.target_command_id}")
        view = self._view_or_raise(self._canonical(targets[0].symbol))
        request = orders.modify_request(cmd, targets[0], digits=view.spec.digits)
        return self._send(cmd, request, view.spec)

    def _close_all(self, cmd: Command) -> Outcome:
        broker = self.symbol_map.get(cmd.symbol) if cmd.symbol else None
        positions, pending = self.terminal.positions(broker), self.terminal.orders(broker)
        if not positions and not pending:
            done = Outcome.no_trade("FILLED", "nothing to close")
            return dataclasses.replace(done, retcode=mt5.TRADE_RETCODE_DONE)
        symbols = {item.symbol for item in (*positions, *pending)}
        ticks = {name: tick for name in symbols if (tick := self.terminal.tick(name)) is not None}
        fillings = {name: orders.filling_for(info.filling_mode, info.trade_exemode)
                    for name in symbols if (info := self.terminal.symbol_info(name)) is not None}
        requests = orders.close_all_requests(positions, pending, symbol=broker, ticks=ticks, hedging=self.hedging,
                                             fillings=fillings, deviation=cmd.max_deviation_points
                                             or self.default_deviation, command_id=cmd.command_id)
        specs = {name: spec_from_info(self._canonical(name), info) for name in symbols
                 if (info := self.terminal.symbol_info(name)) is not None}
        return combine([self._send(cmd, request, specs.get(request["symbol"])) for request in requests])

    def _send(self, cmd: Command, request: Mapping[str, Any], spec: SymbolSpecInfo | None) -> Outcome:
        self._sent = True
        result = self.terminal.order_send(request)
        outcome = orders.outcome(cmd, request, result, spec)
        if cmd.type.opens and outcome.deal_ticket and outcome.status in ("FILLED", "PARTIAL"):
            outcome = self._with_deal_position(outcome)
        return outcome

    def _with_deal_position(self, outcome: Outcome) -> Outcome:
        """The position the opening deal really went to: on a netting account a second
        buy adds to the existing position, whose ticket is not the new order's. Later
        close/modify commands target this ticket, so it must be the real one."""
        try:
            deal = self.terminal.deal(outcome.deal_ticket)
        except TerminalError as exc:  # the fill stands; the order's ticket is the usual rule
            log.debug("deal %s not readable: %s", outcome.deal_ticket, exc)
            return outcome
        position = getattr(deal, "position_id", 0) if deal is not None else 0
        return dataclasses.replace(outcome, position_ticket=position) if position else outcome

    # ---------------------------------------------------------------- recovery
    def find(self, command_id: str, since_s: float, until_s: float) -> Found | None:
        """What the terminal holds of a command the agent may have sent before a crash."""
        return orders.find_by_command(command_id, self.terminal.positions(), self.terminal.orders(),
                                      self.terminal.deals(since_s, until_s))

    # ---------------------------------------------------------------- helpers
    def _view_or_raise(self, canonical: str | None) -> BrokerView:
        view = self.view(canonical) if canonical else None
        if view is None:
            raise UnknownSymbol(f"the broker has no tradable symbol for {canonical}")
        return view

    def _canonical(self, broker_symbol: str) -> str:
        for canonical, broker in self.symbol_map.items():
            if broker == broker_symbol:
                return canonical
        return broker_symbol


class UnknownSymbol(LookupError):
    """The command names a symbol this broker does not offer (under any known name)."""


class NothingSent(TerminalUnavailable):
    """The terminal dropped before any order of the command reached ``order_send``."""



def combine(outcomes: Sequence[Outcome]) -> Outcome:
    """One report for a command that took several requests (a close over several positions,
    close-all): FILLED if all were, PARTIAL if some, else the first refusal."""
    if len(outcomes) == 1:
        return outcomes[0]
    filled = [o for o in outcomes if o.status in ("FILLED", "PARTIAL")]
    if not filled:
        return outcomes[0]
    volume = sum(o.filled_volume for o in filled)
    priced = [o for o in filled if o.fill_price is not None and o.filled_volume > 0]
    weight = sum(o.filled_volume for o in priced)
    average = sum(o.fill_price * o.filled_volume for o in priced) / weight if weight else None
    slippage = sum(o.slippage_points * o.filled_volume for o in priced) / weight if weight else 0.0
    status = "FILLED" if len(filled) == len(outcomes) and all(o.status == "FILLED" for o in filled) else "PARTIAL"
    failures = "; ".join(o.reason for o in outcomes if o not in filled)
    return dataclasses.replace(
        filled[0], status=status, filled_volume=volume, fill_price=average, slippage_points=round(slippage, 3),
        reason=f"{len(filled)} of {len(outcomes)} requests done" + (f"; {failures}" if failures else ""))

"""Decision records on the wire: ``Decision`` (``mt5fleet.workers.core.decision``) <->
``DecisionRecord`` (proto/mt5fleet/v1/decision.proto), both ways.

Both ways because a record is read back: by the worker that finds a (signal, user) already
decided (it republishes the recorded commands, not fresh ones), by ``mt5fleet audit``, and
by whoever recomputes a command from its record. Decoding is a plain mapping, not the
inbound validation: a record was checked when its inputs arrived, and a rule tightened
since must not make last year's records unreadable. Wire conventions as in ``wire``:
a domain ``None`` is the field's 0 or "".
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from mt5fleet.proto.domain import calendar
from mt5fleet.proto.domain.account import AccountSnapshot
from mt5fleet.proto.domain.config import SizingMode
from mt5fleet.proto.domain.market import Quote, SymbolSpecInfo
from mt5fleet.proto.domain.trading import Command, CommandType, OrderType, Signal, SubscriptionTier
from mt5fleet.proto.v1 import account_pb2, commands_pb2, decision_pb2, prices_pb2, signals_pb2, symbols_pb2
from mt5fleet.proto.validation_reports import account_snapshot, spec_info
from mt5fleet.workers.adapters.wire import command_message
from mt5fleet.workers.core.decision import Decision, DecisionInputs, spec_version
from mt5fleet.workers.core.policy import PositionRef, UserPolicy, UserState
from mt5fleet.workers.core.sizing_inputs import Rate, SizingInputs

DecisionRecord = decision_pb2.DecisionRecord


# ----------------------------------------------------------------------------- encode

class _Encoded:
    """Messages encoded once per value: a signal is the same for every user of a fan-out, a
    policy changes with its config, a spec when the agent sends a new one, so a fan-out
    encodes each once instead of once per (signal, user). An entry is found by ``key``
    (default: identity; the values are frozen and kept alive here, so an id is never
    reused while cached) and used only for the very value it was made from; emptied when
    full. A key that names the value's owner (a policy's user) keeps one entry per owner:
    the policy a config replaced is dropped at once instead of kept until the cache fills."""

    def __init__(self, encode: Callable[[Any], Any], size: int = 1 << 16,
                 key: Callable[[Any], Hashable] = id) -> None:
        self.encode, self.size, self.key = encode, size, key
        self.cache: dict[Hashable, tuple[Any, Any]] = {}

    def __call__(self, value: Any) -> Any:
        key = self.key(value)
        hit = self.cache.get(key)
        if hit is not None and hit[0] is value:
            return hit[1]
        if len(self.cache) >= self.size:
            self.cache.clear()
        encoded = self.encode(value)
        self.cache[key] = (value, encoded)
        return encoded


def record_message(decision: Decision, *, worker_version: str = "", worker_replica: str = "") -> DecisionRecord:
    inputs = decision.inputs
    state, spec, age = inputs.state, inputs.spec, inputs.quote_age_ms
    record = DecisionRecord(
        signal_id=decision.signal_id, user_id=decision.user_id, decided_at=inputs.decided_at_ms,
        command_ttl_ms=inputs.command_ttl_ms, worker_version=worker_version, worker_replica=worker_replica,
        signal=_signal_message(inputs.signal), policy=_policy_message(state.policy),
        quotes=[quote_message(q) for _, q in sorted(state.quotes.items())],
        specs=[_spec_message(s) for _, s in sorted(state.specs.items())],
        stopped_out=state.stopped_out, positions=positions_message(state),
        quote_age_ms=-1 if age is None else age, spec_version=_spec_version(spec) if spec else "",
        commands=[command_message(c) for c in decision.commands], skip_reason=decision.skip_reason,
        skip_detail=decision.skip_detail, notes=list(decision.notes))
    if state.account is not None:
        record.account.CopyFrom(account_message(state.account))
    record.news.CopyFrom(news_message(state, inputs.signal.symbol, inputs.decided_at_ms))
    if decision.sizing is not None:
        record.sizing.CopyFrom(sizing_message(decision.sizing))
    return record


def signal_message(signal: Signal) -> signals_pb2.UniversalSignal:
    return signals_pb2.UniversalSignal(
        signal_id=signal.signal_id, symbol=signal.symbol, order_type=int(signal.order_type),
        reference_bid=signal.reference_bid, reference_ask=signal.reference_ask, entry=signal.entry or 0.0,
        stop_loss=signal.stop_loss or 0.0, take_profit=signal.take_profit or 0.0, confidence=signal.confidence,
        created_at=signal.created_at_ms, expires_at=signal.expires_at_ms, strategy=signal.strategy,
        source=signal.source, action=int(signal.action), target_signal_id=signal.target_signal_id or "",
        close_fraction=signal.close_fraction, reason=signal.reason)


def policy_message(policy: UserPolicy) -> decision_pb2.DecisionPolicy:
    return decision_pb2.DecisionPolicy(
        tier=int(policy.tier), tier_name=policy.tier_name, trading_symbols=sorted(policy.trading_symbols),
        allowed_symbols=sorted(policy.allowed_symbols), paused=policy.paused, close_only=policy.close_only,
        max_spread_points=policy.max_spread_points, max_quote_age_ms=policy.max_quote_age_ms,
        max_signal_age_ms=policy.max_signal_age_ms, sizing_mode=int(policy.sizing_mode),
        sizing_value=policy.sizing_value, preferred_lot_size=policy.preferred_lot_size,
        max_risk_per_trade_pct=policy.max_risk_per_trade_pct, max_lot=policy.max_lot,
        conservative_mode=policy.conservative_mode, max_deviation_points=policy.max_deviation_points,
        allow_news_trading=policy.allow_news_trading)


def news_message(state: UserState, symbol: str, now_ms: int) -> decision_pb2.DecisionNews:
    window = state.news_window
    return decision_pb2.DecisionNews(
        before_ms=window.before_ms, after_ms=window.after_ms,
        events=[decision_pb2.DecisionNewsEvent(at=e.at_ms, currency=e.currency, impact=e.impact.value, title=e.title)
                for e in calendar.events_near(state.calendar, symbol, now_ms)])


def news_of(msg: decision_pb2.DecisionNews) -> tuple[calendar.Calendar, calendar.NewsWindow]:
    if not msg.before_ms and not msg.after_ms and not msg.events:  # a record from before issue 17
        return calendar.EMPTY, calendar.NewsWindow()
    events = tuple(calendar.CalendarEvent(e.at, e.currency, calendar.Impact(e.impact), e.title) for e in msg.events)
    return calendar.Calendar(events), calendar.NewsWindow(msg.before_ms, msg.after_ms)


def quote_message(quote: Quote) -> prices_pb2.ClientPrice:
    return prices_pb2.ClientPrice(symbol=quote.symbol, bid=quote.bid, ask=quote.ask, spread=quote.spread_points,
                                  timestamp=quote.time_ms, broker_server=quote.broker_server,
                                  broker_symbol=quote.broker_symbol, digits=quote.digits)


def spec_message(spec: SymbolSpecInfo) -> symbols_pb2.SymbolSpec:
    return symbols_pb2.SymbolSpec(
        symbol=spec.symbol, broker_symbol=spec.broker_symbol, digits=spec.digits, point=spec.point,
        contract_size=spec.contract_size, tick_size=spec.tick_size, tick_value=spec.tick_value,
        volume_min=spec.volume_min, volume_max=spec.volume_max, volume_step=spec.volume_step,
        stops_level=spec.stops_level, freeze_level=spec.freeze_level, filling_modes=spec.filling_modes,
        trade_mode=spec.trade_mode, currency_base=spec.currency_base, currency_profit=spec.currency_profit,
        currency_margin=spec.currency_margin, spread=spec.spread_points, trade_calc_mode=spec.trade_calc_mode)


def account_message(account: AccountSnapshot) -> account_pb2.AccountProfile:
    return account_pb2.AccountProfile(
        user_id=account.user_id, account_number=account.account_number, broker_name=account.broker_name,
        server_name=account.server_name, account_type=int(account.account_type), base_currency=account.currency,
        balance=account.balance, equity=account.equity, margin_used=account.margin_used,
        margin_free=account.margin_free, timestamp=account.time_ms, leverage=account.leverage,
        margin_level=account.margin_level, profit=account.profit, hedging=account.hedging,
        open_positions=account.open_positions, day_start_equity=account.day_start_equity,
        peak_equity=account.peak_equity, sequence=account.sequence)


def positions_message(state: UserState) -> list[decision_pb2.DecisionPosition]:
    volumes = state.position_volumes
    return [decision_pb2.DecisionPosition(signal_id=signal_id, opened_by=opened_by, ticket=ticket,
                                          volume=volumes.get(ticket) or 0.0, volume_known=ticket in volumes)
            for signal_id, refs in sorted(state.positions_by_signal.items()) for opened_by, ticket in refs]


# SizingInputs' fields whose wire name differs, and its optional figures (None: not used by the mode).
SIZING_WIRE_NAMES = {"account_time_ms": "account_time"}
_SIZING_OPTIONAL = {name: SIZING_WIRE_NAMES.get(name, name) for name in (
    "equity", "balance", "account_time_ms", "risk_pct", "risk_limit", "budget", "entry", "stop_loss", "tick_size",
    "tick_value", "lots_per_thousand_usd", "money_usd", "preferred_lot", "raw_lots", "lots")}


def sizing_message(sizing: SizingInputs) -> decision_pb2.DecisionSizing:
    message = decision_pb2.DecisionSizing(
        mode=int(sizing.mode), symbol=sizing.symbol, account_currency=sizing.account_currency,
        headroom=sizing.headroom, move_allowance=sizing.move_allowance, tick_value_source=sizing.tick_value_source,
        conservative=sizing.conservative, conversions=[rate_message(rate) for rate in sizing.conversions])
    for name, wire_name in _SIZING_OPTIONAL.items():
        if getattr(sizing, name) is not None:
            setattr(message, wire_name, getattr(sizing, name))
    return message


_signal_message = _Encoded(signal_message, size=64)
_policy_message = _Encoded(policy_message, key=lambda policy: policy.user_id)
_spec_message = _Encoded(spec_message)
_spec_version = _Encoded(spec_version)
# No cache for accounts: agents send a new snapshot every few seconds, so a snapshot is
# rarely in two fan-outs, and a cache of them only kept dead ones alive (the 1,000-agent
# soak's census: +59,000 snapshots and their protobufs in 10 minutes). 2 µs a record.


def rate_message(rate: Rate) -> decision_pb2.DecisionRate:
    message = decision_pb2.DecisionRate(source=rate.source, target=rate.target, value=rate.value, how=rate.how,
                                        pair=rate.pair, side=rate.side)
    if rate.quote_time_ms is not None:
        message.quote_time = rate.quote_time_ms
    return message


# ----------------------------------------------------------------------------- decode

def decision_of_record(record: DecisionRecord) -> Decision:
    """The decision a record holds: its inputs (enough to recompute) and its output."""
    positions: dict[str, list[PositionRef]] = {}
    for position in record.positions:
        positions.setdefault(position.signal_id, []).append((position.opened_by, position.ticket))
    news = news_of(record.news)
    state = UserState(
        policy=policy_of(record.user_id, record.policy),
        quotes={q.symbol: quote_of(q) for q in record.quotes}, specs={s.symbol: spec_info(s) for s in record.specs},
        account=account_snapshot(record.account) if record.HasField("account") else None,
        stopped_out=record.stopped_out, positions_by_signal={k: tuple(v) for k, v in positions.items()},
        position_volumes={p.ticket: p.volume for p in record.positions if p.volume_known},
        calendar=news[0], news_window=news[1])
    inputs = DecisionInputs(signal_of(record.signal), state, record.decided_at, record.command_ttl_ms)
    return Decision(inputs, commands=tuple(command_of(c) for c in record.commands), skip_reason=record.skip_reason,
                    skip_detail=record.skip_detail, notes=tuple(record.notes),
                    sizing=sizing_of(record.sizing) if record.HasField("sizing") else None)


def sizing_of(msg: decision_pb2.DecisionSizing) -> SizingInputs:
    optional = {name: getattr(msg, wire_name) if msg.HasField(wire_name) else None
                for name, wire_name in _SIZING_OPTIONAL.items()}
    return SizingInputs(
        mode=SizingMode(msg.mode), symbol=msg.symbol, account_currency=msg.account_currency, headroom=msg.headroom,
        move_allowance=msg.move_allowance, tick_value_source=msg.tick_value_source, conservative=msg.conservative,
        conversions=tuple(rate_of(rate) for rate in msg.conversions), **optional)


def rate_of(msg: decision_pb2.DecisionRate) -> Rate:
    return Rate(source=msg.source, target=msg.target, value=msg.value, how=msg.how, pair=msg.pair, side=msg.side,
                quote_time_ms=msg.quote_time if msg.HasField("quote_time") else None)


def signal_of(msg: signals_pb2.UniversalSignal) -> Signal:
    return Signal(
        signal_id=msg.signal_id, symbol=msg.symbol, action=CommandType(msg.action),
        order_type=OrderType(msg.order_type), reference_bid=msg.reference_bid, reference_ask=msg.reference_ask,
        entry=_none_if_zero(msg.entry), stop_loss=_none_if_zero(msg.stop_loss),
        take_profit=_none_if_zero(msg.take_profit), confidence=msg.confidence, created_at_ms=msg.created_at,
        expires_at_ms=msg.expires_at, strategy=msg.strategy, source=msg.source,
        target_signal_id=msg.target_signal_id or None, close_fraction=msg.close_fraction, reason=msg.reason)


def policy_of(user_id: str, msg: decision_pb2.DecisionPolicy) -> UserPolicy:
    return UserPolicy(
        user_id=user_id, tier=SubscriptionTier(msg.tier), tier_name=msg.tier_name,
        trading_symbols=frozenset(msg.trading_symbols), allowed_symbols=frozenset(msg.allowed_symbols),
        paused=msg.paused, close_only=msg.close_only, max_spread_points=msg.max_spread_points,
        max_quote_age_ms=msg.max_quote_age_ms, max_signal_age_ms=msg.max_signal_age_ms,
        sizing_mode=SizingMode(msg.sizing_mode), sizing_value=msg.sizing_value,
        preferred_lot_size=msg.preferred_lot_size, max_risk_per_trade_pct=msg.max_risk_per_trade_pct,
        max_lot=msg.max_lot, conservative_mode=msg.conservative_mode, max_deviation_points=msg.max_deviation_points,
        allow_news_trading=msg.allow_news_trading)


def quote_of(msg: prices_pb2.ClientPrice) -> Quote:
    return Quote(symbol=msg.symbol, bid=msg.bid, ask=msg.ask, time_ms=msg.timestamp, spread_points=msg.spread,
                 broker_symbol=msg.broker_symbol, digits=msg.digits, broker_server=msg.broker_server)


def command_of(msg: commands_pb2.TradingCommand) -> Command:
    return Command(
        command_id=msg.command_id, user_id=msg.user_id, type=CommandType(msg.type), symbol=msg.symbol or None,
        order_type=OrderType(msg.order_type), lot_size=msg.lot_size, entry_price=_none_if_zero(msg.entry_price),
        stop_loss=_none_if_zero(msg.stop_loss), take_profit=_none_if_zero(msg.take_profit),
        created_at_ms=msg.created_at, expires_at_ms=msg.expires_at, confidence=msg.confidence_score,
        reason=msg.reason, position_ticket=msg.position_ticket or None,
        target_command_id=msg.target_command_id or None, max_deviation_points=msg.max_deviation_points,
        signal_id=msg.signal_id or None, signal_created_at_ms=msg.signal_created_at or None,
        original_entry=_none_if_zero(msg.original_entry), price_adjustment=msg.price_adjustment,
        adjustment_reason=msg.adjustment_reason, reference_price=_none_if_zero(msg.reference_price),
        quote_bid=_none_if_zero(msg.quote_bid), quote_ask=_none_if_zero(msg.quote_ask),
        quote_time_ms=msg.quote_time or None, sizing_reason=msg.sizing_reason)


def _none_if_zero(value: float) -> float | None:
    return value if value != 0 else None

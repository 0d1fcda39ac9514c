"""Risk replay (issue 11): random market orders sized by the adjustment worker, checked by the
agent after the price moved, and how many the agent refuses for max risk per trade.

Not a timing benchmark and no NATS: both sides are pure cores, run on the same orders.

* The worker: ``workers.core.adjust.adjust`` on a signal and a user state (broker quotes up
  to 1.5 s old, symbol spec, account, risk %), as the adjustment service calls it.
* Between sizing and execution every quote moves by 0 to ``--max-move`` points (default 10),
  either way: the traded symbol and the conversion pairs alike. The users keep the default
  max deviation, 20 points: the move the worker leaves room for.
* The agent: ``client.core.risk.check`` on the command as it reads it off the wire, at the
  moved quote, with the broker's tick value at that moment (contract x tick size converted at
  the moved mid prices, as MT5 and the simulated terminal compute it).
* Baseline, same orders, same run: the sizing before issue 11 (exactly the user's limit, no
  room for the price to move: ``lot_size(..., headroom=0)``) against the agent's check of that
  time (the limit plus 1e-9 of float slack).

Every order is within the user's limits: the worker sized it to them at its own prices. The
refusal rate of the current sizing must be 0.

    python bench/risk_replay.py [--orders 10000] [--max-move 10] [--seed 11] [--output PATH.json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from _common import WEDNESDAY, command_line

from mt5fleet.client.core.risk import RiskContext, RiskLimits, check, trade_risk
from mt5fleet.proto.domain.account import AccountSnapshot
from mt5fleet.proto.domain.instruments import major_currency
from mt5fleet.proto.domain.market import Quote, SymbolSpecInfo
from mt5fleet.proto.domain.risk import exceeds_limit, risk_limit
from mt5fleet.proto.domain.sessions import market_state
from mt5fleet.proto.domain.trading import Command, CommandType, OrderType, Signal
from mt5fleet.proto.validation import check_command
from mt5fleet.workers.adapters.wire import command_message
from mt5fleet.workers.core.adjust import Adjusted, adjust
from mt5fleet.workers.core.policy import DEFAULT_MAX_DEVIATION_POINTS, UserPolicy, UserState
from mt5fleet.workers.core.sizing import Sizing, lot_size

NOW = WEDNESDAY                 # Wednesday 10:00 New York: the market open, far from the rollover
EXECUTED = NOW + 300            # the agent's check, 300 ms later
OLD_TOLERANCE = 1e-9            # the agent's float slack before issue 11
# symbol: (digits, mid, spread in points); the first five are traded, the rest convert.
MARKET = {"EURUSD": (5, 1.08500, 12), "GBPUSD": (5, 1.26500, 15), "USDJPY": (3, 149.500, 12),
          "EURJPY": (3, 162.200, 20), "XAUUSD": (2, 1951.20, 17), "GBPJPY": (3, 189.000, 25)}
TRADED = ("EURUSD", "GBPUSD", "USDJPY", "EURJPY", "XAUUSD")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "USC")
RISK_PCTS = (0.5, 1.0, 2.0, 3.0)


@dataclass(frozen=True, slots=True)
class Order:
    user: UserState
    signal: Signal
    moves: dict[str, int]        # points each quote moved before the agent's check


@dataclass(slots=True)
class Tally:
    sized: int = 0
    below_minimum: int = 0
    refused: int = 0
    refused_old: int = 0
    refused_old_sizing_new_check: int = 0
    signals_way: int = 0
    refused_signals_way: int = 0
    refused_old_signals_way: int = 0


def quote(symbol: str, mid: float, age_ms: int) -> Quote:
    digits, _, spread = MARKET[symbol]
    point = 10.0 ** -digits
    bid = round(mid - spread // 2 * point, digits)
    return Quote(symbol, bid, round(bid + spread * point, digits), NOW - age_ms, float(spread), digits=digits)


def moved(q: Quote, points: int, at_ms: int) -> Quote:
    shift = points * 10.0 ** -q.digits
    return replace(q, bid=round(q.bid + shift, q.digits), ask=round(q.ask + shift, q.digits), time_ms=at_ms)


def rate(source: str, target: str, quotes: dict[str, Quote]) -> float:
    """Mid-price conversion, as the broker (and the simulated terminal) values a tick."""
    (src, src_units), (dst, dst_units) = major_currency(source), major_currency(target)
    if src == dst:
        return dst_units / src_units
    direct, inverse = quotes.get(src + dst), quotes.get(dst + src)
    value = direct.mid if direct is not None else 1 / inverse.mid  # type: ignore[union-attr]
    return value * dst_units / src_units


def spec(symbol: str, account: str, quotes: dict[str, Quote], stops_level: int) -> SymbolSpecInfo:
    digits = MARKET[symbol][0]
    point = 10.0 ** -digits
    contract = 100.0 if symbol == "XAUUSD" else 100_000.0
    return SymbolSpecInfo(symbol=symbol, broker_symbol=symbol, digits=digits, point=point, contract_size=contract,
                          tick_size=point, tick_value=contract * point * rate(symbol[3:], account, quotes),
                          volume_min=0.01, volume_max=100.0, volume_step=0.01, stops_level=stops_level,
                          currency_base=symbol[:3], currency_profit=symbol[3:])


def random_order(rng: random.Random, max_move: int) -> Order:
    quotes = {s: quote(s, mid, rng.randint(0, 1_500)) for s, (_, mid, _) in MARKET.items()}
    symbol, currency, buy = rng.choice(TRADED), rng.choice(CURRENCIES), rng.random() < 0.5
    usd_equity = math.exp(rng.uniform(math.log(500), math.log(500_000)))
    equity = round(usd_equity * rate("USD", currency, quotes), 2)
    pct = rng.choice(RISK_PCTS)
    policy = UserPolicy(user_id=f"u{rng.randrange(10**6)}", trading_symbols=frozenset(TRADED),
                        max_risk_per_trade_pct=pct)
    account = AccountSnapshot(user_id=policy.user_id, account_number="1", currency=currency, balance=equity,
                              equity=equity, margin_used=0.0, margin_free=equity, time_ms=NOW - 1_000)
    specs = {s: spec(s, currency, quotes, rng.randint(0, 20)) for s in TRADED}
    user = UserState(policy=policy, quotes=quotes, specs=specs, account=account)
    return Order(user, _signal(rng, quotes[symbol], buy), {s: rng.randint(-max_move, max_move) for s in MARKET})


def _signal(rng: random.Random, user_quote: Quote, buy: bool) -> Signal:
    """A market order on a reference feed a few points off the user's broker, its stop 5 to
    200 pips (gold: 0.50 to 20.00) from the reference price."""
    digits, point = user_quote.digits, 10.0 ** -user_quote.digits
    offset = rng.randint(-5, 5) * point
    bid, ask = round(user_quote.bid - offset, digits), round(user_quote.ask - offset, digits)
    entry, side = (ask, -1) if buy else (bid, 1)
    stop = round(entry + side * rng.randint(50, 2_000) * point, digits)
    return Signal(signal_id=f"sig-{rng.randrange(10**9)}", symbol=user_quote.symbol, action=CommandType.OPEN_POSITION,
                  order_type=OrderType.BUY if buy else OrderType.SELL, reference_bid=bid, reference_ask=ask,
                  entry=None, stop_loss=stop, take_profit=None, confidence=0.7, created_at_ms=NOW - 500,
                  expires_at_ms=NOW + 60_000)


def agent_view(order: Order, cmd: Command) -> tuple[RiskContext, RiskLimits]:
    """What the agent sees at EXECUTED: every quote moved, the broker's tick value of now."""
    assert cmd.symbol is not None and order.user.account is not None
    now_quotes = {s: moved(q, order.moves[s], EXECUTED) for s, q in order.user.quotes.items()}
    account = order.user.account
    live = spec(cmd.symbol, account.currency, now_quotes, order.user.specs[cmd.symbol].stops_level)
    q = now_quotes[cmd.symbol]
    ctx = RiskContext(now_ms=EXECUTED, equity=account.equity, balance=account.balance,
                      day_start_equity=account.equity, peak_equity=account.equity, open_positions=0,
                      symbol_positions=0, bid=q.bid, ask=q.ask, spread_points=q.spread_points, spec=live,
                      market=market_state(EXECUTED))
    limits = RiskLimits(trading_symbols=frozenset(TRADED),
                        max_risk_per_trade_pct=order.user.policy.max_risk_per_trade_pct)
    return ctx, limits


def exact_limit_lots(order: Order, cmd: Command) -> float | None:
    """The lot size the worker gave before issue 11: exactly the limit at its own price."""
    user = order.user
    sizing = lot_size(user.policy, user.specs[order.signal.symbol], entry=cmd.entry_price or 0.0,
                      stop_loss=cmd.stop_loss, account=user.account, quotes=user.quotes, now_ms=NOW, headroom=0.0)
    assert isinstance(sizing, Sizing)
    return sizing.lots


def replay(orders: int, max_move: int, seed: int) -> dict:
    rng = random.Random(seed)
    tally, lots_ratio, risk_share = Tally(), [], []
    for _ in range(orders):
        order = random_order(rng, max_move)
        result = adjust(order.signal, order.user, NOW)
        if not isinstance(result, Adjusted):
            tally.below_minimum += 1
            continue
        cmd = check_command(command_message(result.commands[0]), EXECUTED)
        ctx, limits = agent_view(order, cmd)
        signals_way = order.moves[order.signal.symbol] * (1 if cmd.order_type.is_buy else -1) > 0
        refused = not check(cmd, limits, ctx).allowed
        old_lots = exact_limit_lots(order, cmd)
        old = replace(cmd, lot_size=old_lots) if old_lots else None
        limit = risk_limit(ctx.equity, limits.max_risk_per_trade_pct)
        old_refused = old is not None and exceeds_limit(trade_risk(old, ctx), limit, tolerance=OLD_TOLERANCE)
        tally.sized += 1
        tally.refused += refused
        tally.refused_old += old_refused
        tally.refused_old_sizing_new_check += old is not None and not check(old, limits, ctx).allowed
        tally.signals_way += signals_way
        tally.refused_signals_way += refused and signals_way
        tally.refused_old_signals_way += old_refused and signals_way
        if old_lots:
            lots_ratio.append(cmd.lot_size / old_lots)
        risk_share.append(trade_risk(cmd, ctx) / limit)
    return _figures(orders, max_move, seed, tally, lots_ratio, risk_share)


def _figures(orders: int, max_move: int, seed: int, tally: Tally, lots_ratio: list[float],
             risk_share: list[float]) -> dict:
    def pct(part: int, whole: int) -> float:
        return round(100 * part / whole, 2) if whole else 0.0

    return {
        "orders": orders, "max_move_points": max_move, "seed": seed, "sized": tally.sized,
        "skipped_below_minimum": tally.below_minimum,
        "refused": tally.refused, "refused_pct": pct(tally.refused, tally.sized),
        "moved_signals_way": tally.signals_way,
        "refused_moved_signals_way_pct": pct(tally.refused_signals_way, tally.signals_way),
        "baseline_refused": tally.refused_old, "baseline_refused_pct": pct(tally.refused_old, tally.sized),
        "baseline_refused_moved_signals_way_pct": pct(tally.refused_old_signals_way, tally.signals_way),
        "exact_sizing_new_check_refused_pct": pct(tally.refused_old_sizing_new_check, tally.sized),
        "lots_vs_exact_limit_median_pct": round(100 * statistics.median(lots_ratio), 1),
        "lots_vs_exact_limit_p10_pct": round(100 * statistics.quantiles(lots_ratio, n=10)[0], 1),
        "risk_at_execution_of_limit_mean_pct": round(100 * statistics.fmean(risk_share), 1),
        "risk_at_execution_of_limit_max_pct": round(100 * max(risk_share), 2),
    }


def show(f: dict) -> None:
    print(f"risk replay: {f['orders']:,} random market orders, 0-{f['max_move_points']} points of price movement "
          f"between sizing and execution (seed {f['seed']})")
    print(f"  sized by the worker: {f['sized']:,} ({f['skipped_below_minimum']:,} skipped: lot below the "
          f"broker's minimum); {f['moved_signals_way']:,} moved the signal's way")
    print(f"  refused by the agent's check, sizing with headroom:           {f['refused']:,} "
          f"({f['refused_pct']:.2f} %; {f['refused_moved_signals_way_pct']:.2f} % of those moved the signal's way)")
    print(f"  baseline, exact-limit sizing and the old check, same orders:  {f['baseline_refused']:,} "
          f"({f['baseline_refused_pct']:.2f} %; {f['baseline_refused_moved_signals_way_pct']:.2f} % of those "
          f"moved the signal's way)")
    print(f"  exact-limit sizing against the new check (0.1 % tolerance alone): "
          f"{f['exact_sizing_new_check_refused_pct']:.2f} %")
    print(f"  lots against exact-limit sizing: median {f['lots_vs_exact_limit_median_pct']} %, "
          f"10th percentile {f['lots_vs_exact_limit_p10_pct']} %")
    print(f"  money at risk at execution, of the user's limit: mean {f['risk_at_execution_of_limit_mean_pct']} %, "
          f"max {f['risk_at_execution_of_limit_max_pct']} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--max-move", type=int, default=10, help="points each quote may move, either way")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--output", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    figures = replay(args.orders, args.max_move, args.seed)
    show(figures)
    if args.output:
        figures["command"] = command_line("risk_replay.py", sys.argv[1:])
        args.output.write_text(json.dumps(figures, indent=2) + "\n")
    # Within the replayed users' max deviation (the default, 20 points) the worker's room
    # covers every move; beyond it an order can truly break the limit and be refused.
    if figures["refused"] and args.max_move <= DEFAULT_MAX_DEVIATION_POINTS:
        raise SystemExit(f"{figures['refused']} orders sized within the limit were refused")


if __name__ == "__main__":
    main()

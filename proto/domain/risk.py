"""The money one order puts at risk and the user's per-trade limit: one definition, used by
the adjustment worker when it sizes an order and by the agent when it checks the order
before sending it (SPEC §5, §6).

    money at risk = lots x ticks from the entry to the stop loss x value of one tick of
                    one lot in the account currency
    limit         = equity x max risk per trade % / 100

Worker and agent look at the same order at two moments. The worker sizes it on the user's
quote; the agent checks it a moment later at the price it sends the order at (today's ask
or bid for a market order, the entry for a pending one) with the broker's own tick value.
The agent measures at its own price, not at the command's entry, because it must hold the
limit even when the server is wrong: a command whose entry was put next to its stop would
pass a check at that entry and still risk many times the limit.

Sized to exactly the limit, every market order whose price moved away from its stop before
the agent saw it (the market moving the signal's way: the winners) would break the limit
at the agent and be refused. So each side holds a stated margin:

* the worker sizes a market order as if it were filled ``max_deviation_points`` further
  from the stop than its quote (the slippage the user accepts on every order; 20 points,
  2 pips on FX, by default): an order reaching the agent within that many points of the
  worker's price is within the limit there, however tight its stop;
* the worker spends (1 - ``SIZING_HEADROOM``) of the limit, leaving 1 % for the broker
  valuing a tick a little differently from the worker (the worker converts the tick value
  through the user's conversion quote, up to 2 s old; the broker through its own rate, and
  it rounds the figure it reports);
* the agent refuses only a risk above the limit by more than ``EXECUTION_TOLERANCE``
  (0.1 % of it: 10 cents on a 100 USD limit): float and rounding noise, not a different
  trade. Anything more is refused, whatever the server sent.

``bench/risk_replay.py`` replays random market orders through both sides and prints how
many the agent refuses (docs/performance.md).
"""

from __future__ import annotations

import math

SIZING_HEADROOM = 0.01
EXECUTION_TOLERANCE = 0.001


def money_at_risk(lots: float, entry: float, stop_loss: float, *, tick_size: float, tick_value: float) -> float:
    """Account money lost if an order of ``lots`` at ``entry`` is stopped out at ``stop_loss``."""
    if not tick_size > 0:
        raise ValueError(f"tick size must be positive, got {tick_size!r}")
    return lots * abs(entry - stop_loss) / tick_size * tick_value


def risk_limit(equity: float, max_risk_pct: float) -> float:
    """The most money one trade may risk: ``max_risk_pct`` % of the equity (none when the
    equity is not positive)."""
    if not (math.isfinite(max_risk_pct) and 0 <= max_risk_pct <= 100):
        raise ValueError(f"max risk per trade must be between 0 and 100 %, got {max_risk_pct!r}")
    return max(equity, 0.0) * max_risk_pct / 100


def sizing_budget(limit: float, headroom: float = SIZING_HEADROOM) -> float:
    """The money the worker sizes an order to: the limit less the headroom."""
    return limit * (1 - headroom)


def worst_entry(entry: float, stop_loss: float, move: float) -> float:
    """``entry`` moved ``move`` further from ``stop_loss``: where a fill costs the most if
    the stop is hit (above a buy's entry, below a sell's)."""
    return entry + move if entry > stop_loss else entry - move


def lots_for(budget: float, entry: float, stop_loss: float, *, tick_size: float, tick_value: float) -> float:
    """The (unrounded) lots whose money at risk from ``entry`` to ``stop_loss`` is ``budget``;
    0 when a lot risks nothing measurable (no distance, no tick value)."""
    per_lot = money_at_risk(1.0, entry, stop_loss, tick_size=tick_size, tick_value=tick_value)
    return budget / per_lot if per_lot > 0 else 0.0


def exceeds_limit(risk: float, limit: float, tolerance: float = EXECUTION_TOLERANCE) -> bool:
    """True when ``risk`` is above ``limit`` by more than the tolerance: the agent refuses it."""
    return risk > limit * (1 + tolerance)

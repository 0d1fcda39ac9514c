"""Where one user's share of a signal's fan-out goes, stage by stage, in CPU (no NATS).

The worker's state is filled as ``bench/workers.py`` fills it (``_common.populate``: each
user's config, EURUSD quote, spec and account through the worker's own handlers), then
each stage of the fan-out runs alone over every user, timed without a profiler (cProfile
doubles Python-level work), best of ``--rounds``:

* ``state``: ``FleetState.user_state`` (the user's view the adjustment reads);
* ``gates``: ``policy.first_skip`` (paused, tier, symbol, news window, quote age, ...);
* ``levels``: entry and SL/TP shifted to the user's broker and fenced (``adjust``'s
  decimal price arithmetic);
* ``sizing``: ``sizing.lot_size`` on those levels (risk %, tick value, broker steps);
* ``adjust``: the whole ``adjust`` (the stages above plus building the command);
* ``decide``: ``decision.decide`` (``adjust`` through read-logging views, the inputs kept);
* ``record``: the decision record encoded (``record_message`` + ``SerializeToString``);
* ``command``: the command encoded (``wire.command_message`` + ``SerializeToString``).

The baseline is the same run's total, ``decide`` + ``record`` + ``command`` (what the
replica's loop spends per user before publishing): each stage's share of it.

    python bench/adjust_breakdown.py [--users 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import command_line, machine, now_ms, populate, signal, write_results

from mt5fleet.workers.adapters import wire
from mt5fleet.workers.adapters.decisions import record_message
from mt5fleet.workers.app.adjust_service import AdjustWorker
from mt5fleet.workers.core import adjust as adjust_module
from mt5fleet.workers.core.decision import decide
from mt5fleet.workers.core.policy import first_skip
from mt5fleet.workers.core.sizing import lot_size


class _NoNats:
    """The worker's constructor asks its connection for a JetStream context; no stage here
    publishes, so there is nothing behind it."""

    def jetstream(self, **_: Any) -> None:
        return None


def best_us_per_user(run: Callable[[], object], users: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(min(times) / users * 1e6, 1)


def stages(worker: AdjustWorker, users: list[str]) -> dict[str, Callable[[], object]]:
    sig, now = signal("breakdown-1"), now_ms()
    states = [worker.state.user_state(u) for u in users]
    quote_spec = [(s.quotes[sig.symbol], s.specs[sig.symbol]) for s in states]
    levels = [adjust_module._guarded_levels(sig, q, spec) for q, spec in quote_spec]
    decisions = [decide(sig, s, now) for s in states]
    commands = [c for d in decisions for c in d.commands]

    def sizing() -> None:
        for state, (_, spec), level in zip(states, quote_spec, levels, strict=True):
            lot_size(state.policy, spec, entry=float(level.entry), stop_loss=float(level.stop_loss),
                     account=state.account, quotes=state.quotes, now_ms=now,
                     move_allowance=adjust_module._move_allowance(sig, state, spec))

    return {
        "state": lambda: [worker.state.user_state(u) for u in users],
        "gates": lambda: [first_skip(sig, s, now) for s in states],
        "levels": lambda: [adjust_module._guarded_levels(sig, q, spec) for q, spec in quote_spec],
        "sizing": sizing,
        "adjust": lambda: [adjust_module.adjust(sig, s, now) for s in states],
        "decide": lambda: [decide(sig, s, now) for s in states],
        "record": lambda: [record_message(d, worker_replica="bench").SerializeToString() for d in decisions],
        "command": lambda: [wire.command_message(c).SerializeToString() for c in commands],
    }


def main(arguments: argparse.Namespace) -> None:
    worker = AdjustWorker(_NoNats(), replica_id="bench", now_ms=now_ms)
    populate(worker, arguments.users)
    users = worker.state.users()
    figures = {name: best_us_per_user(run, len(users), arguments.rounds)
               for name, run in stages(worker, users).items()}
    total = figures["decide"] + figures["record"] + figures["command"]
    for name, us in figures.items():
        print(f"{name:>8}: {us:7.1f} µs a user   {us / total:5.0%} of the per-user total {total:.1f} µs")
    write_results(arguments.output, {
        "benchmark": "adjust_breakdown", "command": command_line("adjust_breakdown.py", arguments.argv),
        "machine": machine(), "users": len(users), "rounds": arguments.rounds,
        "us_per_user": figures, "baseline_total_us_per_user": round(total, 1),
        "share_of_total": {name: round(us / total, 3) for name, us in figures.items()}})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="adjust_breakdown", help="docs/benchmarks/<output>.json")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    main(args)

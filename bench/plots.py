"""Plots of the benchmark results: docs/benchmarks/<name>.json -> docs/benchmarks/<name>.png,
each figure with its baseline beside it.

    python bench/plots.py            # every JSON file of docs/benchmarks
    python bench/plots.py delivery   # one

Each benchmark script also calls ``plot_file`` on the file it has just written. A file
with no dedicated plot (``operator.json`` when another benchmark writes it, for example)
gets a generic one: every "x vs baseline" pair found in it, as bars.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
PRODUCT, BASELINE, OTHER = "#1f6fb4", "#a0a0a0", "#e08a2c"


def plot_file(path: Path) -> Path | None:
    data = json.loads(Path(path).read_text())
    name = Path(path).stem
    plotter = PLOTTERS.get(data.get("benchmark", name), _generic)
    figure = plotter(data)
    if figure is None:
        return None
    png = Path(path).with_suffix(".png")
    figure.text(0.01, 0.005, _footer(data), fontsize=7, color="#555555", ha="left", va="bottom")
    figure.savefig(png, dpi=110)
    plt.close(figure)
    return png


def _footer(data: dict[str, Any]) -> str:
    m = data.get("machine")
    if isinstance(m, dict):
        parts = [" ".join(str(x) for x in (m.get("cores"), "cores", m.get("cpu")) if x),
                 f"{m.get('ram_gb', m.get('ram_gib'))} GB", f"Python {m.get('python')}",
                 f"nats-server {m.get('nats_server')}", m.get("date"), "shared machine, noisy"]
        return ", ".join(p for p in parts if p)
    if isinstance(m, str):
        return f"{m}, nats-server {data.get('nats_server', '?')}"
    return ""


def _bar_labels(axis: Any, bars: Any, fmt: str = "{:,.0f}") -> None:
    for bar in bars:
        height = bar.get_height()
        axis.annotate(fmt.format(height), (bar.get_x() + bar.get_width() / 2, height), ha="center", va="bottom",
                      fontsize=7, xytext=(0, 2), textcoords="offset points")


def _grouped(axis: Any, groups: list[str], series: list[tuple[str, list[float], str]], fmt: str = "{:,.0f}") -> None:
    width = 0.8 / len(series)
    for k, (label, values, color) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        _bar_labels(axis, axis.bar(xs, values, width, label=label, color=color), fmt)
    axis.set_xticks(range(len(groups)), groups)
    axis.legend(fontsize=7)
    axis.margins(y=0.15)


# ---------------------------------------------------------------------- per benchmark
def _workers(data: dict[str, Any]) -> Any:
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    fanouts = [data[k] for k in ("fanout_1k", "fanout") if k in data]
    _grouped(left, [f"{f['users']:,} users" for f in fanouts], [
        ("mt5fleet: adjusted + acked commands/s", [f["commands_per_s"] for f in fanouts], PRODUCT),
        ("raw nats-py JetStream publishes/s", [f["baseline_js_publish_per_s"] for f in fanouts], BASELINE)])
    left.set_title("fan-out: 1 signal -> 1 command per user", fontsize=9)
    left.set_ylabel("per second")
    if "ingest" in data:
        ingest = data["ingest"]
        bars = right.bar(["mt5fleet\ndecode+validate+update", "raw core\nsubscribe"],
                         [ingest["batches_per_s"], ingest["baseline_subscribe_per_s"]], color=[PRODUCT, BASELINE])
        _bar_labels(right, bars)
        right.set_title(f"price ingest, {ingest['quotes_per_batch']} quotes/batch", fontsize=9)
        right.set_ylabel("batches per second")
        right.margins(y=0.15)
    figure.suptitle("Adjustment worker vs raw nats-py (bench/workers.py)", fontsize=10)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def _delivery(data: dict[str, Any]) -> Any:
    scales = data.get("scales", {})
    consumers = data.get("per_user_consumers", {})
    figure, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    (last, cdf_axis), (contrast, server) = axes
    keys = list(scales)
    _grouped(last, [f"{int(k):,} agents" for k in keys], [
        ("live path: AdjustWorker JetStream publish -> plain sub", [scales[k]["live_last_received_s"] for k in keys],
         PRODUCT),
        ("raw nats-py JetStream publish -> plain sub", [scales[k].get("jetstream_raw_last_received_s", 0)
                                                       for k in keys], OTHER),
        ("core NATS publish -> plain sub (baseline)", [scales[k]["core_last_received_s"] for k in keys], BASELINE)],
        fmt="{:.2f} s")
    last.set_ylabel("seconds until the last agent has its command")
    last.set_title("one command per agent (median round)", fontsize=9)
    if keys:
        top = scales[keys[-1]]
        for label, key, color in (("live path", "live_median_round", PRODUCT),
                                  ("raw JetStream", "jetstream_raw_median_round", OTHER),
                                  ("core NATS", "core_median_round", BASELINE)):
            if key in top:
                cdf = top[key]["receipt"]["cdf_ms"]
                cdf_axis.plot([x / 1000 for x in cdf], [i / 100 for i in range(len(cdf))], label=label, color=color)
        cdf_axis.set_xlabel("seconds after the first publish")
        cdf_axis.set_ylabel("share of agents that have their command")
        cdf_axis.set_title(f"receipt CDF at {int(keys[-1]):,} agents (median round)", fontsize=9)
        cdf_axis.legend(fontsize=7)
        cdf_axis.grid(alpha=0.3)
    users = list(consumers)
    if users:
        _grouped(contrast, [f"{int(u):,} users" for u in users], [
            ("plain subscriptions", [consumers[u]["plain"]["msg_per_s"] for u in users], PRODUCT),
            ("per-user live filtered consumers", [consumers[u]["consumer"]["msg_per_s"] for u in users], OTHER)])
        contrast.set_ylabel("commands delivered per second")
        contrast.set_title("SPEC §2.2's warning: a live consumer per user", fontsize=9)
    else:
        contrast.set_visible(False)
    groups, series = [], {"mt5fleet": [], "baseline": []}
    for k in keys:
        if "live_server_cpu_us_per_command" in scales[k]:
            groups.append(f"{int(k):,} agents\nlive vs core")
            series["mt5fleet"].append(scales[k]["live_server_cpu_us_per_command"])
            series["baseline"].append(scales[k]["core_server_cpu_us_per_message"])
    for u in users:
        if "server_cpu_us_per_message" in consumers[u]["plain"]:
            groups.append(f"{int(u):,} users\nconsumers vs plain")
            series["mt5fleet"].append(consumers[u]["consumer"]["server_cpu_us_per_message"])
            series["baseline"].append(consumers[u]["plain"]["server_cpu_us_per_message"])
    if groups:
        _grouped(server, groups, [("JetStream live path / per-user consumers", series["mt5fleet"], PRODUCT),
                                  ("core NATS / plain subscriptions (baseline)", series["baseline"], BASELINE)],
                 fmt="{:,.0f}")
        server.set_ylabel("nats-server CPU µs per message delivered")
        server.set_title("the server's own cost (/proc/<pid>/stat)", fontsize=9)
        server.tick_params(axis="x", labelsize=8)
    else:
        server.set_visible(False)
    figure.suptitle("Command delivery to connected agents (bench/delivery.py)", fontsize=10)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def _end_to_end(data: dict[str, Any]) -> Any:
    measured = data["measured"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    for label, key, color in (("signal -> command at the agent", "signal_to_command", PRODUCT),
                              ("NATS request/reply round trip (baseline)", "request_reply", BASELINE)):
        summary = measured[key]
        cdf = summary["cdf_ms"]
        left.plot(cdf, [i / 100 for i in range(len(cdf))], color=color,
                  label=f"{label}: p50 {summary['p50_ms']:.1f}, p99 {summary['p99_ms']:.0f}, "
                        f"p99.9 {summary['p999_ms']:.0f} ms")
    left.set_xscale("log")
    left.set_xlabel("milliseconds (log)")
    left.set_ylabel("cumulative share")
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=7, loc="lower right")
    left.set_title(f"{measured['received']:,} commands from {measured['signals']} signals, "
                   f"{measured.get('price_batches_per_s', '?')} price batches/s", fontsize=9)
    stages = measured.get("worker_stages", {}).get("median", {})
    if stages:
        labels = ["first partition\npicked up", "last partition\npicked up", "all partitions\nadjusted",
                  "all commands\nstored (acked)", "first agent\nhas it", "last agent\nhas it"]
        per_signal = list(measured.get("per_signal", {}).values())
        first = sorted(s["first_ms"] for s in per_signal if s["first_ms"] is not None)
        last = sorted(s["last_ms"] for s in per_signal if s["last_ms"] is not None)
        values = [stages["first_picked_up_ms"], stages["last_picked_up_ms"], stages["all_adjusted_ms"],
                  stages["all_stored_ms"], first[len(first) // 2] if first else 0, last[len(last) // 2] if last else 0]
        bars = right.barh(labels[::-1], values[::-1], color=[PRODUCT] * 2 + [OTHER] * 4)
        for bar in bars:
            right.annotate(f"{bar.get_width():,.0f} ms", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                           va="center", fontsize=7, xytext=(2, 0), textcoords="offset points")
        right.set_xlabel("ms after the signal's publish (median over signals)")
        right.set_title("where the time goes (worker process stages)", fontsize=9)
        right.margins(x=0.2)
    figure.suptitle(f"Signal -> command at {data.get('agents', 1000):,} agents streaming prices "
                    "(bench/end_to_end.py)", fontsize=10)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def _agent(data: dict[str, Any]) -> Any:
    rows = data.get("per_count", {})
    counts = list(rows)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    cpu, rss, encoding = axes
    _grouped(cpu, [f"N={c}" for c in counts], [
        ("mt5fleet Agent + simulated terminal", [rows[c]["agent"]["cpu_ms_per_s_per_agent"] for c in counts],
         PRODUCT),
        ("raw nats-py: 1 price batch/s (baseline)", [rows[c]["raw"]["cpu_ms_per_s_per_agent"] for c in counts],
         BASELINE)], fmt="{:.2f}")
    cpu.set_ylabel("CPU ms per second per agent")
    cpu.set_title("CPU per agent (N in one process)", fontsize=9)
    _grouped(rss, [f"N={c}" for c in counts], [
        ("mt5fleet Agent", [rows[c]["agent"]["rss_mb_per_agent"] for c in counts], PRODUCT),
        ("raw nats-py connection", [rows[c]["raw"]["rss_mb_per_agent"] for c in counts], BASELINE)], fmt="{:.2f}")
    rss.set_ylabel("RSS MB per agent")
    rss.set_title("memory per agent", fontsize=9)
    e = data.get("encoding")
    if e:
        _grouped(encoding, ["encode", "decode", "decode + read"], [
            (f"protobuf ({e['protobuf_bytes']:,} B)", [e["protobuf_encode_us"], e["protobuf_decode_us"],
                                                       e["protobuf_decode_read_us"]], PRODUCT),
            (f"JSON ({e['json_bytes']:,} B)", [e["json_encode_us"], e["json_decode_us"], e["json_decode_read_us"]],
             BASELINE)])
        encoding.set_ylabel("µs per batch of 1,000 ticks")
        encoding.set_title(f"ClientPriceStream of 1,000 ticks ({e['protobuf_backend']})", fontsize=9)
    figure.suptitle("Client agent (bench/agent.py)", fontsize=10)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def _worker_capacity(data: dict[str, Any]) -> Any:
    rows = data.get("scales", {})
    keys = list(rows)
    figure, (cpu, done) = plt.subplots(1, 2, figsize=(12, 4.2))
    _grouped(cpu, [f"{int(k):,} users" for k in keys], [
        ("prices only (baseline)", [rows[k]["worker_cpu_share_prices_only"] for k in keys], BASELINE),
        ("prices + 3 signals", [rows[k]["worker_cpu_share_with_signals"] for k in keys], PRODUCT)], fmt="{:.2f}")
    cpu.axhline(1.0, color="#c03030", linewidth=0.8, linestyle="--")
    cpu.set_ylabel("worker process CPU, share of one core")
    cpu.set_title("one replica following every user's prices at 1 batch/s", fontsize=9)
    _grouped(done, [f"{int(k):,} users" for k in keys], [
        ("commands stored by 8 s after the last signal, % of expected",
         [100 * rows[k]["commands_stored_in_time"] / rows[k]["commands_expected"] for k in keys], PRODUCT),
        ("users skipped as stale quote, %",
         [100 * rows[k]["stale_quote_skips"] / rows[k]["commands_expected"] for k in keys], OTHER)], fmt="{:.0f}%")
    done.set_ylabel("% of users x signals")
    done.set_title("3 signals, 8 s apart, default 2 s quote age", fontsize=9)
    done.margins(y=0.2)
    figure.suptitle("Adjustment worker capacity (bench/end_to_end.py --capacity)", fontsize=10)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def _operator(data: dict[str, Any]) -> Any:
    phases = [(key, label) for key, label in (("first_pass", "first pass"), ("resync_at_rest", "resync at rest"),
                                              ("tier_change", "tier change")) if key in data]
    baseline = data.get("baseline_kv_put", {})
    areas = data.get("profile", {}).get("by_area", {})
    figure, axes = plt.subplots(1, 2 if areas else 1, figsize=(13 if areas else 7, 4.4), squeeze=False)
    rates = axes[0][0]
    labels = [f"{label}\n({data[key].get('users', '?'):,} users)" for key, label in phases]
    values = [data[key]["per_s"] for key, _ in phases]
    errors = [[data[key]["per_s"] - data[key].get("per_s_min", data[key]["per_s"]) for key, _ in phases],
              [data[key].get("per_s_max", data[key]["per_s"]) - data[key]["per_s"] for key, _ in phases]]
    bars = rates.bar(labels, values, yerr=errors, capsize=4, color=PRODUCT, label="mt5fleet operator, users/s")
    for bar in bars:
        rates.annotate(f"{bar.get_height():,.1f}", (bar.get_x() + bar.get_width() * 0.97, bar.get_height()),
                       ha="right", va="top", fontsize=7, color="white", xytext=(0, -3), textcoords="offset points")
    if baseline:
        line = rates.axhline(baseline["per_s"], color=BASELINE, linestyle="--")
        line.set_label(f"baseline: raw kv.put/s of the same configs ({baseline['per_s']:,.0f}/s)")
        rates.set_yscale("log")
    rates.set_ylabel("users per second (log; min..max of the runs)")
    rates.legend(fontsize=7)
    rates.set_title(f"local mode, median of {data.get('runs', '?')} runs", fontsize=9)
    if areas:
        where = axes[0][1]
        ordered = sorted(areas.items(), key=lambda item: item[1])
        where.barh([k for k, _ in ordered], [v for _, v in ordered], color=OTHER)
        where.set_xlabel("seconds under cProfile (first pass)")
        where.set_title("where the time goes", fontsize=9)
        where.tick_params(axis="y", labelsize=7)
    figure.suptitle("Operator (bench/operator.py)", fontsize=10)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def _generic(data: dict[str, Any]) -> Any:
    """Every dict holding a number and a number whose key says baseline: one pair of bars each."""
    pairs: list[tuple[str, float, float, str]] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        numbers = {k: v for k, v in node.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        baselines = [k for k in numbers if "baseline" in k]
        products = [k for k in numbers if "baseline" not in k and "ratio" not in k]
        for b in baselines:
            stem = b.replace("baseline_", "").replace("_baseline", "")
            match = next((p for p in products if p.split("_")[-1] == stem.split("_")[-1]), None)
            if match:
                pairs.append((f"{path}{match}", numbers[match], numbers[b], b))
        for key, value in node.items():
            if key != "machine":
                walk(value, f"{path}{key}/")

    walk(data, "")
    if not pairs:
        return None
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(pairs)), 4.2))
    _grouped(axis, [p[0].replace("/", "\n") for p in pairs], [
        ("mt5fleet", [p[1] for p in pairs], PRODUCT), ("baseline", [p[2] for p in pairs], BASELINE)], fmt="{:,.3g}")
    axis.tick_params(axis="x", labelsize=7)
    figure.suptitle(f"{data.get('benchmark', 'benchmark')}: figures beside their baselines", fontsize=10)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


PLOTTERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "workers": _workers, "delivery": _delivery, "end_to_end": _end_to_end, "agent": _agent,
    "worker_capacity": _worker_capacity, "operator": _operator,
}


def main(names: list[str]) -> None:
    paths = [OUT / f"{n}.json" for n in names] if names else sorted(OUT.glob("*.json"))
    for path in paths:
        png = plot_file(path)
        print(f"{path.name} -> {png.name if png else 'nothing to plot'}")


if __name__ == "__main__":
    main(sys.argv[1:])

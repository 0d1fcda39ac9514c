"""The chart's four Grafana dashboards, built with Grafana's own Python SDK (PyPI
``grafana-foundation-sdk``, pinned in pyproject's dev extra) and written to
deploy/helm/mt5fleet/files/dashboards/*.json, which the chart ships as ConfigMaps.

    python deploy/grafana/dashboards.py          # regenerate the JSON files
    python deploy/grafana/dashboards.py --check  # exit 1 when a committed file differs from what this builds

Edit this file, never the JSON: tests/test_dashboards.py rebuilds every dashboard and fails
when a committed file differs. The SDK lays panels out (each row, then its panels left to
right, wrapping at 24 columns); ids and refIds are given here so that they stay stable.
That test also evaluates every query against a real Prometheus scraping the components'
real exposition, and wants every metric a component exports on some dashboard.
"""

# ruff: noqa: E501 - each PromQL query stays on one line, as it is searched for

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import table as table_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prometheus_model

OUT = Path(__file__).resolve().parents[2] / "deploy/helm/mt5fleet/files/dashboards"
DS = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAG = "mt5fleet"
# The drill-down's panels on the agent's own /metrics (where it is scraped) pick the user
# through mt5fleet_agent_info's user_id label.
OF_USER = ' * on (job, instance) group_left (user_id) mt5fleet_agent_info{user_id="$user"}'
# From a panel whose series carry user_id: that user's drill-down, same data source and time.
USER_URL = "/d/mt5fleet-user/mt5fleet-user?var-user={user}&${{datasource:queryparam}}&${{__url_time_range}}"
USER_OF = {"timeseries": "${__field.labels.user_id}", "table": "${__data.fields.user_id}"}


# ----------------------------------------------------------------------- what the dashboards hold


@dataclass
class Query:
    expr: str
    legend: str = ""


@dataclass
class Panel:
    kind: str  # row, stat, timeseries or table
    title: str
    queries: list[Query] = field(default_factory=list)
    unit: str | None = None
    desc: str = ""
    yes_no: bool = False  # 0/1 shown as no/yes
    min: float | None = None
    max: float | None = None
    w: int | None = None  # columns of 24 (stat 4, others 12)
    to_user: bool = False  # series by user_id link to the drill-down


@dataclass
class Board:
    file: str
    uid: str
    title: str
    description: str
    panels: list[Panel]
    templated_on_user: bool = False


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def row(title: str) -> Panel:
    return Panel("row", title)


def stat(title: str, queries: list[Query], **kw) -> Panel:
    return Panel("stat", title, queries, **kw)


def series(title: str, queries: list[Query], **kw) -> Panel:
    return Panel("timeseries", title, queries, **kw)


def table(title: str, queries: list[Query], **kw) -> Panel:
    return Panel("table", title, queries, **kw)


FLEET_OVERVIEW = Board(
    "mt5fleet-fleet-overview.json",
    "mt5fleet-fleet-overview",
    "mt5fleet / Fleet overview",
    "Clients, agents, throughput, refusals and skips, latency breakdown, slippage, lag",
    [
        row("Fleet"),
        stat("Agents connected", [q("sum(mt5fleet_fleet_agent_connected)")], desc="Heartbeat at most 15 s old"),
        stat("Agents known", [q("count(mt5fleet_fleet_agent_connected)")], desc="Agents that ever sent a heartbeat"),
        stat("Terminals connected", [q("sum(mt5fleet_fleet_terminal_connected)")]),
        stat("Reports in outboxes", [q("sum(mt5fleet_fleet_outbox_depth)")], desc="Waiting on VPSs for NATS"),
        stat(
            "Fills / min",
            [q('sum(rate(mt5fleet_fleet_executions_total{status=~"filled|partial"}[$__rate_interval])) * 60')],
        ),
        stat(
            "Signals / min",
            [
                q(
                    'sum(rate(mt5fleet_worker_signals_total{result="done"}[$__rate_interval])) * 60 / clamp_min(sum(mt5fleet_worker_partitions_owned), 1)'
                )
            ],
            desc="Counted once per owned partition, so divided by the partitions owned",
        ),
        series("TradingClients by tier", [q("sum by (tier) (mt5fleet_operator_clients)", "{{tier}}")]),
        series("TradingClients by phase", [q("sum by (phase) (mt5fleet_operator_clients)", "{{phase}}")]),
        table(
            "TradingClients by tier and phase",
            [q("sum by (tier, phase) (mt5fleet_operator_clients)")],
            desc="The state of each tier now, as the operator reconciled it",
        ),
        series(
            "Agents by state",
            [
                q("sum(mt5fleet_fleet_agent_connected * mt5fleet_fleet_terminal_connected)", "connected, terminal up"),
                q(
                    "sum(mt5fleet_fleet_agent_connected * (1 - mt5fleet_fleet_terminal_connected))",
                    "connected, terminal down",
                ),
                q("sum(1 - mt5fleet_fleet_agent_connected)", "silent (heartbeat older than 15 s)"),
            ],
            desc="From the heartbeats the fleet-health exporter republishes",
        ),
        series(
            "Heartbeat age",
            [
                q("max(mt5fleet_fleet_heartbeat_age_seconds)", "oldest"),
                q("quantile(0.5, mt5fleet_fleet_heartbeat_age_seconds)", "median"),
            ],
            unit="s",
        ),
        table(
            "Oldest heartbeats (click a user for the drill-down)",
            [q("topk(10, mt5fleet_fleet_heartbeat_age_seconds)", "{{user_id}}")],
            unit="s",
            to_user=True,
        ),
        row("Throughput"),
        series(
            "Signals and commands",
            [
                q(
                    'sum(rate(mt5fleet_worker_signals_total{result="done"}[$__rate_interval])) / clamp_min(sum(mt5fleet_worker_partitions_owned), 1)',
                    "signals",
                ),
                q("sum(rate(mt5fleet_worker_commands_published_total[$__rate_interval]))", "commands published"),
                q('sum(rate(mt5fleet_fleet_executions_total{status=~"filled|partial"}[$__rate_interval]))', "fills"),
            ],
            unit="ops",
        ),
        series(
            "Execution reports by status",
            [q("sum by (status) (rate(mt5fleet_fleet_executions_total[$__rate_interval]))", "{{status}}")],
            unit="ops",
        ),
        row("Refusals and skips"),
        series(
            "Users skipped by reason (workers)",
            [q("sum by (reason) (rate(mt5fleet_worker_skips_total[$__rate_interval]))", "{{reason}}")],
            unit="ops",
            desc="One per (signal, user) that got no command",
        ),
        series(
            "Commands refused by reason (agents)",
            [
                q(
                    'sum by (status, reason) (rate(mt5fleet_fleet_executions_total{status=~"rejected|expired|failed"}[$__rate_interval]))',
                    "{{status}} {{reason}}",
                )
            ],
            unit="ops",
            desc="The agent's reject code; empty for broker rejections and terminal failures",
        ),
        row("Latency"),
        series(
            "Latency breakdown p99: signal → worker → agent → fill",
            [
                q('mt5fleet:fleet_latency_seconds:p99_5m{leg="signal_to_worker"}', "signal → worker"),
                q('mt5fleet:fleet_latency_seconds:p99_5m{leg="worker_to_agent"}', "worker → agent"),
                q('mt5fleet:fleet_latency_seconds:p99_5m{leg="agent_to_fill"}', "agent → fill"),
                q('mt5fleet:fleet_latency_seconds:p99_5m{leg="signal_to_fill"}', "signal → fill (end to end)"),
            ],
            unit="s",
            desc="Each leg from the execution reports (feedback worker); p99 over 5 m",
        ),
        series(
            "Latency breakdown p50: signal → worker → agent → fill",
            [
                q('mt5fleet:fleet_latency_seconds:p50_5m{leg="signal_to_worker"}', "signal → worker"),
                q('mt5fleet:fleet_latency_seconds:p50_5m{leg="worker_to_agent"}', "worker → agent"),
                q('mt5fleet:fleet_latency_seconds:p50_5m{leg="agent_to_fill"}', "agent → fill"),
                q('mt5fleet:fleet_latency_seconds:p50_5m{leg="signal_to_fill"}', "signal → fill (end to end)"),
            ],
            unit="s",
            desc="Each leg from the execution reports (feedback worker); p50 over 5 m",
        ),
        series(
            "Signal → command (p50, p99)",
            [
                q('mt5fleet:fleet_latency_seconds:p50_5m{leg="signal_to_worker"}', "signal → worker p50"),
                q('mt5fleet:fleet_latency_seconds:p99_5m{leg="signal_to_worker"}', "signal → worker p99"),
                q('mt5fleet:fleet_latency_seconds:p50_5m{leg="worker_to_agent"}', "worker → agent p50"),
                q('mt5fleet:fleet_latency_seconds:p99_5m{leg="worker_to_agent"}', "worker → agent p99"),
            ],
            unit="s",
            desc="Budget 2 s for signal → command at the agent (alert Mt5fleetSignalToCommandLatencyHigh)",
        ),
        series(
            "Worker pick-up and adjustment p99",
            [
                q("mt5fleet:worker_signal_to_worker_seconds:p99_5m", "signal → picked up"),
                q("mt5fleet:worker_adjust_seconds:p99_5m", "partition adjusted and stored"),
            ],
            unit="s",
        ),
        row("Slippage"),
        series(
            "Slippage p50 / p99 (points, positive = worse)",
            [
                q("mt5fleet:fleet_slippage_points:p50_5m", "p50 vs {{against}}"),
                q("mt5fleet:fleet_slippage_points:p99_5m", "p99 vs {{against}}"),
            ],
            unit="none",
            desc="Budget: 20 points against the adjusted price (alert Mt5fleetSlippageOverBudget)",
        ),
        series(
            "Mean slippage per fill (points)",
            [
                q(
                    "sum by (against) (delta(mt5fleet_fleet_slippage_points_net[15m])) / sum by (against) (increase(mt5fleet_fleet_slippage_points_count[15m]))",
                    "vs {{against}}",
                )
            ],
            unit="none",
        ),
        row("Lag"),
        series(
            "Consumer pending (NATS exporter)",
            [
                q(
                    'max by (consumer_name) (nats_consumer_num_pending{consumer_name=~"adjust-p[0-9]+|execution-feedback"})',
                    "{{consumer_name}}",
                )
            ],
            unit="short",
        ),
        series(
            "Consumer ack pending (NATS exporter)",
            [
                q(
                    'max by (consumer_name) (nats_consumer_num_ack_pending{consumer_name=~"adjust-p[0-9]+"})',
                    "{{consumer_name}}",
                )
            ],
            unit="short",
            desc="Delivered to an adjustment worker, not yet acknowledged",
        ),
        series(
            "Largest agent outboxes",
            [q("topk(10, mt5fleet_fleet_outbox_depth)", "{{user_id}}")],
            unit="short",
            to_user=True,
        ),
    ],
)

USER = Board(
    "mt5fleet-user.json",
    "mt5fleet-user",
    "mt5fleet / User",
    "One trader's agent: heartbeat figures for every user; equity, commands, fills, slippage and refusals where the agent itself is scraped",
    [
        row("Heartbeat (every agent, republished by the health exporter)"),
        stat("Connected", [q('mt5fleet_fleet_agent_connected{user_id="$user"}')], yes_no=True),
        stat("Terminal connected", [q('mt5fleet_fleet_terminal_connected{user_id="$user"}')], yes_no=True),
        stat("Heartbeat age", [q('mt5fleet_fleet_heartbeat_age_seconds{user_id="$user"}')], unit="s"),
        stat("Outbox", [q('mt5fleet_fleet_outbox_depth{user_id="$user"}')], unit="short"),
        stat("Last signal → execution", [q('mt5fleet_fleet_command_latency_ms{user_id="$user"}')], unit="ms"),
        stat("Price staleness", [q('mt5fleet_fleet_price_staleness_ms{user_id="$user"}')], unit="ms"),
        series(
            "Latency reported in heartbeats",
            [
                q('mt5fleet_fleet_command_latency_ms{user_id="$user"}', "last signal → execution"),
                q('mt5fleet_fleet_publish_latency_ms{user_id="$user"}', "last publish → ack"),
            ],
            unit="ms",
        ),
        series(
            "Heartbeat age, price staleness",
            [
                q('mt5fleet_fleet_heartbeat_age_seconds{user_id="$user"} * 1000', "heartbeat age"),
                q('mt5fleet_fleet_price_staleness_ms{user_id="$user"}', "oldest quote"),
            ],
            unit="ms",
        ),
        row("Agent metrics (only where Prometheus scrapes the agent's /metrics, e.g. a managed VPS)"),
        series(
            "Equity",
            [q(f"mt5fleet_agent_equity{OF_USER}", "equity")],
            unit="none",
            desc="In the deposit currency; balance is not exported",
        ),
        series("Open positions", [q(f"mt5fleet_agent_positions_open{OF_USER}", "positions")], unit="short"),
        series(
            "Commands by outcome",
            [q(f"sum by (status) (rate(mt5fleet_agent_commands_total[$__rate_interval]){OF_USER})", "{{status}}")],
            unit="ops",
        ),
        series(
            "Commands refused by reason",
            [
                q(
                    f"sum by (reason) (rate(mt5fleet_agent_commands_rejected_total[$__rate_interval]){OF_USER})",
                    "{{reason}}",
                )
            ],
            unit="ops",
        ),
        series(
            "Command latency p99 by stage",
            [
                q(
                    f"histogram_quantile(0.99, sum by (le, stage) (rate(mt5fleet_agent_command_latency_seconds_bucket[$__rate_interval]){OF_USER}))",
                    "{{stage}}",
                )
            ],
            unit="s",
        ),
        series(
            "Fill slippage p50 / p99 (points)",
            [
                q(
                    f"histogram_quantile(0.5, sum by (le, against) (rate(mt5fleet_agent_slippage_points_bucket[$__rate_interval]){OF_USER}))",
                    "p50 vs {{against}}",
                ),
                q(
                    f"histogram_quantile(0.99, sum by (le, against) (rate(mt5fleet_agent_slippage_points_bucket[$__rate_interval]){OF_USER}))",
                    "p99 vs {{against}}",
                ),
                q(
                    f"sum by (against) (delta(mt5fleet_agent_slippage_points_net[1h]){OF_USER}) / sum by (against) (increase(mt5fleet_agent_slippage_points_count[1h]){OF_USER})",
                    "mean (1h) vs {{against}}",
                ),
            ],
            unit="none",
        ),
        series(
            "Connections",
            [
                q(f"mt5fleet_agent_nats_connected{OF_USER}", "NATS connected"),
                q(f"mt5fleet_agent_terminal_connected{OF_USER}", "terminal connected"),
                q(f"mt5fleet_agent_ready{OF_USER}", "ready"),
                q(f"mt5fleet_agent_alive{OF_USER}", "alive"),
                q(f"mt5fleet_agent_catchup_failing{OF_USER}", "catch-up failing"),
                q(f"increase(mt5fleet_agent_nats_reconnects_total[1h]){OF_USER}", "NATS reconnects (1h)"),
            ],
        ),
        series(
            "Not ready, by reason",
            [
                q(f"mt5fleet_agent_not_ready{OF_USER}", "{{reason}}"),
                q(f"increase(mt5fleet_agent_not_ready_transitions_total[1h]){OF_USER}", "began (1h): {{reason}}"),
            ],
        ),
        series(
            "Publishing",
            [
                q(
                    f"sum by (kind) (rate(mt5fleet_agent_messages_published_total[$__rate_interval]){OF_USER})",
                    "{{kind}} / s",
                ),
                q(
                    f"histogram_quantile(0.99, sum by (le, kind) (rate(mt5fleet_agent_publish_latency_seconds_bucket[$__rate_interval]){OF_USER}))",
                    "p99 ack {{kind}} (s)",
                ),
            ],
        ),
        series(
            "Quotes",
            [
                q(f"mt5fleet_agent_tick_rate{OF_USER}", "quotes / s (last interval)"),
                q(f"rate(mt5fleet_agent_quotes_read_total[$__rate_interval]){OF_USER}", "quotes read / s"),
                q(f"mt5fleet_agent_price_staleness_seconds{OF_USER}", "staleness (s)"),
                q(
                    f"rate(mt5fleet_agent_price_buffer_dropped_total[$__rate_interval]){OF_USER}",
                    "dropped from the offline buffer / s",
                ),
            ],
        ),
        series(
            "Outbox and held commands",
            [
                q(f"mt5fleet_agent_outbox_depth{OF_USER}", "outbox"),
                q(f"mt5fleet_agent_commands_held{OF_USER}", "held: {{reason}}"),
            ],
            unit="short",
        ),
        series(
            "Errors and refusals of input",
            [
                q(f"sum by (code) (increase(mt5fleet_agent_mt5_errors_total[1h]){OF_USER})", "MT5 error {{code}}"),
                q(f"sum by (kind) (increase(mt5fleet_agent_invalid_messages_total[1h]){OF_USER})", "invalid {{kind}}"),
                q(
                    f"sum by (reason) (increase(mt5fleet_agent_catchup_failures_total[1h]){OF_USER})",
                    "catch-up failed: {{reason}}",
                ),
                q(f"increase(mt5fleet_agent_catchup_commands_total[1h]){OF_USER}", "commands read by catch-up"),
                q(f"increase(mt5fleet_agent_md_refused_total[1h]){OF_USER}", "md subscriptions refused"),
                q(
                    f"increase(mt5fleet_agent_chart_history_unusable_total[1h]){OF_USER}",
                    "chart history unusable at start",
                ),
            ],
            unit="short",
            desc="Counts over the last hour",
        ),
        series(
            "Clocks",
            [
                q(f"mt5fleet_agent_terminal_server_offset_seconds{OF_USER}", "trade server − UTC"),
                q(f"mt5fleet_agent_clock_skew_seconds{OF_USER}", "host − broker"),
                q(f"mt5fleet_agent_clock_correction_seconds{OF_USER}", "correction applied"),
                q(
                    f"time() - (mt5fleet_agent_terminal_server_offset_measured_timestamp_seconds{OF_USER})",
                    "since the offset was confirmed",
                ),
            ],
            unit="s",
        ),
    ],
    templated_on_user=True,
)

WORKERS = Board(
    "mt5fleet-workers-nats.json",
    "mt5fleet-workers",
    "mt5fleet / Workers and NATS",
    "Adjustment, market-data, feedback, catch-up and health workers; JetStream consumers and storage",
    [
        row("Adjustment workers"),
        series(
            "Partitions owned per replica",
            [
                q("mt5fleet_worker_partitions_owned", "{{instance}}"),
                q("sum(mt5fleet_worker_partitions_owned)", "total"),
            ],
            unit="short",
        ),
        series("Users known per replica", [q("mt5fleet_worker_users_known", "{{instance}}")], unit="short"),
        series(
            "Signals by result",
            [q("sum by (result) (rate(mt5fleet_worker_signals_total[$__rate_interval]))", "{{result}}")],
            unit="ops",
            desc="retry: publishing the commands failed and the signal is redelivered",
        ),
        series(
            "Decision records",
            [q("sum by (outcome) (rate(mt5fleet_worker_decisions_recorded_total[$__rate_interval]))", "{{outcome}}")],
            unit="ops",
            desc="existing: a redelivery, its recorded commands republished",
        ),
        series(
            "Stale-quote skips",
            [
                q(
                    'sum by (reason) (rate(mt5fleet_worker_skips_total{reason=~"stale_quote|stale_conversion|no_quote"}[$__rate_interval]))',
                    "{{reason}}",
                ),
                q(
                    'sum(rate(mt5fleet_worker_skips_total{reason=~"stale_quote|stale_conversion"}[15m])) / sum(rate(mt5fleet_worker_decisions_recorded_total{outcome="stored"}[15m]))',
                    "share of decisions (15m)",
                ),
            ],
            desc="Alert Mt5fleetStaleQuoteSkipsRising at 5 % of decisions",
        ),
        series(
            "Pick-up, adjustment and take-over p99",
            [
                q("mt5fleet:worker_signal_to_worker_seconds:p99_5m", "signal → picked up"),
                q("mt5fleet:worker_adjust_seconds:p99_5m", "partition adjusted and stored"),
                q(
                    "histogram_quantile(0.99, sum by (le) (rate(mt5fleet_worker_take_over_seconds_bucket[$__rate_interval])))",
                    "partition taken over (state decoded, prices read)",
                ),
            ],
            unit="s",
        ),
        series(
            "State followed, by stream",
            [q("sum by (stream) (rate(mt5fleet_worker_state_messages_total[$__rate_interval]))", "{{stream}}")],
            unit="ops",
        ),
        series(
            "Failures: pulls, leases, publishes",
            [
                q("sum by (job) (rate(mt5fleet_worker_fetch_errors_total[$__rate_interval]))", "adjust pulls {{job}}"),
                q("sum(rate(mt5fleet_worker_lease_failures_total[$__rate_interval]))", "lease renewals"),
                q(
                    'sum(rate(mt5fleet_worker_signals_total{result="retry"}[$__rate_interval]))',
                    "command publish retries",
                ),
                q(
                    "sum(rate(mt5fleet_marketdata_publish_errors_total[$__rate_interval]))",
                    "market-data publish errors",
                ),
                q("sum(rate(mt5fleet_fleet_feedback_fetch_errors_total[$__rate_interval]))", "feedback pulls"),
            ],
            unit="ops",
        ),
        series(
            "Inbound messages refused",
            [
                q("sum by (kind) (rate(mt5fleet_worker_invalid_messages_total[$__rate_interval]))", "{{kind}}"),
                q("sum(rate(mt5fleet_fleet_invalid_reports_total[$__rate_interval]))", "execution reports"),
                q("sum(mt5fleet_fleet_invalid_heartbeats)", "heartbeats (since start)"),
            ],
        ),
        series(
            "JetStream resources re-created",
            [q("sum by (job, resource) (increase(mt5fleet_worker_recreated_total[1h]))", "{{job}} {{resource}}")],
            unit="short",
        ),
        row("Readiness"),
        series(
            "Readiness checks (1 = passing)", [q("min by (job, check) (mt5fleet_worker_ready)", "{{job}} {{check}}")]
        ),
        series(
            "Checks turned failing",
            [q("sum by (job, check) (increase(mt5fleet_worker_unready_total[1h]))", "{{job}} {{check}}")],
            unit="short",
        ),
        series("Scrape targets up", [q('sum by (job) (up{job=~".*mt5fleet.*"})', "{{job}}")], unit="short"),
        row("Market data and catch-up"),
        series(
            "Reference feed",
            [
                q("sum(rate(mt5fleet_marketdata_ticks_total[$__rate_interval]))", "ticks"),
                q("sum(rate(mt5fleet_marketdata_bars_total[$__rate_interval])) * 60", "M1 bars / min"),
                q("sum by (kind) (rate(mt5fleet_marketdata_published_total[$__rate_interval]))", "published {{kind}}"),
            ],
            unit="ops",
        ),
        series("Symbols with bars", [q("max(mt5fleet_marketdata_symbols)", "symbols")], unit="short"),
        series(
            "Catch-up requests",
            [
                q("sum by (result) (rate(mt5fleet_catchup_requests_total[$__rate_interval]))", "{{result}}"),
                q("sum by (reason) (rate(mt5fleet_catchup_refused_total[$__rate_interval]))", "refused: {{reason}}"),
                q("sum(rate(mt5fleet_catchup_commands_served_total[$__rate_interval]))", "commands served"),
            ],
            unit="ops",
        ),
        series(
            "Catch-up page p99",
            [
                q(
                    "histogram_quantile(0.99, sum by (le) (rate(mt5fleet_catchup_page_seconds_bucket[$__rate_interval])))",
                    "p99",
                )
            ],
            unit="s",
        ),
        row("NATS JetStream (prometheus-nats-exporter of the NATS chart)"),
        series(
            "Consumer pending",
            [
                q(
                    'max by (stream_name, consumer_name) (nats_consumer_num_pending{consumer_name=~"adjust-p[0-9]+|execution-feedback"})',
                    "{{consumer_name}}",
                )
            ],
            unit="short",
            desc="Messages not yet delivered to mt5fleet's durable consumers",
        ),
        series(
            "Consumer ack pending",
            [
                q(
                    'max by (stream_name, consumer_name) (nats_consumer_num_ack_pending{consumer_name=~"adjust-p[0-9]+|execution-feedback"})',
                    "{{consumer_name}}",
                )
            ],
            unit="short",
        ),
        series(
            "JetStream storage used / limit per server",
            [q("nats_varz_jetstream_stats_storage / (nats_varz_jetstream_config_max_storage > 0)", "{{server_id}}")],
            unit="percentunit",
            min=0,
            max=1,
        ),
        series(
            "JetStream storage per account",
            [
                q("max by (account) (nats_account_storage_used)", "{{account}} used"),
                q("max by (account) (nats_account_max_storage > 0)", "{{account}} reserved"),
            ],
            unit="bytes",
        ),
        series(
            "Stream size",
            [
                q(
                    'max by (stream_name) (nats_stream_total_bytes{stream_name=~"TC_.*|SIGNALS|MARKET_DATA"})',
                    "{{stream_name}}",
                )
            ],
            unit="bytes",
        ),
    ],
)

OPERATOR = Board(
    "mt5fleet-operator.json",
    "mt5fleet-operator",
    "mt5fleet / Operator",
    "Reconciles, errors, leader election and the adjustment-worker pool",
    [
        row("Leadership and pool"),
        stat(
            "Leader replicas", [q("sum(mt5fleet_operator_leader)")], desc="1 expected (alert Mt5fleetOperatorNoLeader)"
        ),
        stat("Adjust replicas asked", [q("max(mt5fleet_operator_worker_replicas)")]),
        stat("Adjust replicas running", [q("count(mt5fleet_worker_partitions_owned)")]),
        stat("TradingClients", [q("sum(mt5fleet_operator_clients)")]),
        stat("Reconcile errors (1h)", [q('sum(increase(mt5fleet_operator_reconciles_total{result="error"}[1h]))')]),
        stat("Reconcile p99", [q("mt5fleet:operator_reconcile_seconds:p99_5m")], unit="s"),
        series("Leader per replica", [q("mt5fleet_operator_leader", "{{instance}}")]),
        series(
            "Adjustment worker pool",
            [
                q("max(mt5fleet_operator_worker_replicas)", "asked"),
                q("count(mt5fleet_worker_partitions_owned)", "running"),
            ],
            unit="short",
        ),
        row("Reconciles"),
        series(
            "Reconciles by result",
            [q("sum by (result) (rate(mt5fleet_operator_reconciles_total[$__rate_interval]))", "{{result}}")],
            unit="ops",
        ),
        series(
            "Reconcile duration",
            [
                q("mt5fleet:operator_reconcile_seconds:p99_5m", "p99"),
                q(
                    "histogram_quantile(0.5, sum by (le) (rate(mt5fleet_operator_reconcile_seconds_bucket[$__rate_interval])))",
                    "p50",
                ),
                q(
                    "sum(rate(mt5fleet_operator_reconcile_seconds_sum[$__rate_interval])) / sum(rate(mt5fleet_operator_reconcile_seconds_count[$__rate_interval]))",
                    "mean",
                ),
            ],
            unit="s",
        ),
        series(
            "Resources changed",
            [
                q(
                    "sum by (resource, change) (rate(mt5fleet_operator_changes_total[$__rate_interval]))",
                    "{{change}} {{resource}}",
                )
            ],
            unit="ops",
        ),
        table("TradingClients by tier and phase", [q("sum by (tier, phase) (mt5fleet_operator_clients)")]),
        series(
            "Broker mismatches",
            [q("max(mt5fleet_operator_broker_mismatches)", "users close-only")],
            unit="short",
            desc="Users whose agent is on another trade server than declared: close-only (alert Mt5fleetBrokerMismatch)",
        ),
    ],
)

BOARDS = [FLEET_OVERVIEW, USER, WORKERS, OPERATOR]


# ----------------------------------------------------------------------- built with the SDK


def _target(query: Query, ref_id: str, as_table: bool) -> prometheus_builders.Dataquery:
    target = prometheus_builders.Dataquery().datasource(DS).ref_id(ref_id).expr(query.expr).legend_format(query.legend)
    if as_table:
        target = target.instant().format(prometheus_model.PromQueryFormat.TABLE)
    return target


def _panel(spec: Panel, panel_id: int):
    if spec.kind == "stat":
        built = (
            stat_builders.Panel()
            .color_mode(common.BigValueColorMode.VALUE)
            .graph_mode(common.BigValueGraphMode.AREA)
            .text_mode(common.BigValueTextMode.AUTO)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
            .height(4)
            .span(spec.w or 4)
        )
    elif spec.kind == "timeseries":
        built = (
            timeseries_builders.Panel()
            .legend(
                common_builders.VizLegendOptions()
                .display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM)
                .show_legend(True)
            )
            .tooltip(
                common_builders.VizTooltipOptions()
                .mode(common.TooltipDisplayMode.MULTI)
                .sort(common.SortOrder.DESCENDING)
            )
            .height(8)
            .span(spec.w or 12)
        )
    elif spec.kind == "table":
        built = table_builders.Panel().height(8).span(spec.w or 12)
    else:
        raise ValueError(spec.kind)
    built = built.id(panel_id).title(spec.title).description(spec.desc).datasource(DS)
    for index, query in enumerate(spec.queries):
        built = built.with_target(_target(query, chr(ord("A") + index), spec.kind == "table"))
    if spec.unit:
        built = built.unit(spec.unit)
    if spec.min is not None:
        built = built.min(spec.min)
    if spec.max is not None:
        built = built.max(spec.max)
    if spec.yes_no:
        built = built.mappings(
            [
                model.ValueMap(
                    options={
                        "0": model.ValueMappingResult(text="no", color="red"),
                        "1": model.ValueMappingResult(text="yes", color="green"),
                    }
                )
            ]
        )
    if spec.to_user:
        built = built.data_links(
            [builders.DashboardLink("Open this user's dashboard").url(USER_URL.format(user=USER_OF[spec.kind]))]
        )
    return built


def build(board: Board) -> dict:
    """The dashboard's JSON model, as Grafana imports it."""
    built = (
        builders.Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags([TAG])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .timezone("utc")
        .refresh("30s")
        .version(1)
        .annotation(
            builders.AnnotationQuery()
            .name("Annotations & Alerts")
            .built_in(1)
            .enable(True)
            .hide(True)
            .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
        )
        .link(
            builders.DashboardLink(TAG)
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
            .icon("external link")
        )
        .with_variable(builders.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    if board.templated_on_user:
        built = built.with_variable(
            builders.QueryVariable("user")
            .label("User")
            .datasource(DS)
            .query("label_values(mt5fleet_fleet_agent_connected, user_id)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
        )
    for panel_id, spec in enumerate(board.panels, start=1):
        if spec.kind == "row":
            built = built.with_row(builders.Row(spec.title).id(panel_id))
        else:
            built = built.with_panel(_panel(spec, panel_id))
    return json.loads(json.dumps(built.build(), cls=JSONEncoder))


def render(board: Board) -> str:
    return json.dumps(build(board), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    stale = []
    for board in BOARDS:
        path = OUT / board.file
        text = render(board)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run python deploy/grafana/dashboards.py): {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

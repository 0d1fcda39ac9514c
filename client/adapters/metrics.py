"""Every Prometheus metric the agent exports, named in one place.

One ``AgentMetrics`` per agent, each on its own registry: the demo runs many agents in one
process, and a per-agent registry keeps their series apart on their own /metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Latencies from a signal to its fill span network hops and a broker round trip.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
SLIPPAGE_BUCKETS = (-20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50)

# Stages of a command's life, as labels of mt5fleet_agent_command_latency_seconds.
STAGE_SIGNAL_TO_RECEIVED = "signal_to_received"
STAGE_WORKER_TO_AGENT = "worker_to_agent"
STAGE_RECEIVED_TO_EXECUTED = "received_to_executed"
STAGE_SIGNAL_TO_EXECUTED = "signal_to_executed"


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.info = Info("mt5fleet_agent", "Agent build and identity", registry=r)
        self.nats_connected = Gauge(
            "mt5fleet_agent_nats_connected", "1 while connected to NATS", registry=r)
        self.nats_reconnects = Counter(
            "mt5fleet_agent_nats_reconnects_total", "NATS reconnections", registry=r)
        self.terminal_connected = Gauge(
            "mt5fleet_agent_terminal_connected", "1 while the MT5 terminal answers", registry=r)
        self.published = Counter(
            "mt5fleet_agent_messages_published_total", "Messages stored by JetStream, by kind",
            ["kind"], registry=r)
        self.publish_latency = Histogram(
            "mt5fleet_agent_publish_latency_seconds", "JetStream publish to ack, by kind",
            ["kind"], buckets=PUBLISH_BUCKETS, registry=r)
        self.command_latency = Histogram(
            "mt5fleet_agent_command_latency_seconds",
            "Command latency by stage: signal_to_received, worker_to_agent, received_to_executed, "
            "signal_to_executed", ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.slippage = Histogram(
            "mt5fleet_agent_slippage_points",
            "Fill slippage in points (positive = worse for the trader), against the adjusted or the "
            "reference price", ["against"], buckets=SLIPPAGE_BUCKETS, registry=r)
        # The histogram's _sum is not exported with negative buckets: the net sum is.
        self.slippage_net = Gauge(
            "mt5fleet_agent_slippage_points_net", "Sum of fill slippage in points", ["against"], registry=r)
        self.commands = Counter(
            "mt5fleet_agent_commands_total", "Commands handled, by outcome status", ["status"], registry=r)
        self.rejected = Counter(
            "mt5fleet_agent_commands_rejected_total", "Commands refused, by reason", ["reason"], registry=r)
        self.invalid = Counter(
            "mt5fleet_agent_invalid_messages_total", "Inbound messages refused by validation, by kind",
            ["kind"], registry=r)
        self.catchup_failures = Counter(
            "mt5fleet_agent_catchup_failures_total", "Catch-up attempts that failed and will be retried, by reason "
            "(no_responders, timeout, refused, invalid_page, connection, error)", ["reason"], registry=r)
        self.catchup_commands = Counter(
            "mt5fleet_agent_catchup_commands_total", "Stored commands read by catch-up after a (re)connect",
            registry=r)
        self.mt5_errors = Counter(
            "mt5fleet_agent_mt5_errors_total", "MetaTrader5 API failures, by last_error code",
            ["code"], registry=r)
        self.price_staleness = Gauge(
            "mt5fleet_agent_price_staleness_seconds", "Age of the oldest symbol's latest broker tick",
            registry=r)
        self.quotes_read = Counter(
            "mt5fleet_agent_quotes_read_total", "Broker quotes read from the terminal", registry=r)
        self.tick_rate = Gauge(
            "mt5fleet_agent_tick_rate", "Quotes read per second over the last price interval", registry=r)
        self.outbox_depth = Gauge(
            "mt5fleet_agent_outbox_depth", "Reports and account updates waiting for NATS", registry=r)
        self.price_buffer_dropped = Counter(
            "mt5fleet_agent_price_buffer_dropped_total", "Quotes dropped from the offline buffer (oldest first)",
            registry=r)
        self.positions_open = Gauge(
            "mt5fleet_agent_positions_open", "Open positions in the terminal", registry=r)
        self.equity = Gauge("mt5fleet_agent_equity", "Account equity in the deposit currency", registry=r)
        self.server_offset = Gauge(
            "mt5fleet_agent_terminal_server_offset_seconds", "The MT5 trade server's time minus UTC, as the agent "
            "converts terminal times with it (GMT+2 is 7200)", registry=r)
        self.server_offset_measured = Gauge(
            "mt5fleet_agent_terminal_server_offset_measured_timestamp_seconds", "When the terminal's ticks last "
            "confirmed the server time offset (unix seconds; 0: never, the offset is assumed)", registry=r)
        self.ready = Gauge(
            "mt5fleet_agent_ready", "1 while the agent does its job within every budget (/readyz 200)", registry=r)
        self.not_ready = Gauge(
            "mt5fleet_agent_not_ready", "1 while this reason keeps the agent not ready (prices_not_published, "
            "nats_disconnected, terminal_disconnected, outbox_not_draining, catchup_failing, storage_unwritable; "
            "mt5_thread_stuck, loop_stopped fail /healthz)", ["reason"], registry=r)
        self.not_ready_transitions = Counter(
            "mt5fleet_agent_not_ready_transitions_total", "Times this reason began to keep the agent not ready",
            ["reason"], registry=r)
        self.alive = Gauge(
            "mt5fleet_agent_alive", "1 unless the agent is wedged beyond its own recovery (/healthz 503)", registry=r)
        self.catchup_failing = Gauge(
            "mt5fleet_agent_catchup_failing", "1 while the catch-up after a (re)connect fails and is being retried",
            registry=r)
        self.commands_held = Gauge(
            "mt5fleet_agent_commands_held", "Commands waiting, not yet executed nor refused, by what they wait for "
            "(terminal, disk)", ["reason"], registry=r)
        self.clock_skew = Gauge(
            "mt5fleet_agent_clock_skew_seconds", "The host clock minus the broker's, measured on fresh ticks "
            "(positive: the host is ahead)", registry=r)
        self.clock_correction = Gauge(
            "mt5fleet_agent_clock_correction_seconds", "What the agent subtracts from the host clock to stamp "
            "messages and judge expiry (0: the host clock is used as it is)", registry=r)
        self.chart_history_unusable = Counter(
            "mt5fleet_agent_chart_history_unusable", "Chart history files found unusable at start (corrupt, "
            "too large, not ours): ignored, the status page's charts started empty", registry=r)
        self.md_refused = Counter(
            "mt5fleet_agent_md_refused_total", "md.<symbol> subscriptions the server refused (permissions "
            "violation); each is asked for once per connection", registry=r)

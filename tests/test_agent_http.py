"""The agent's /metrics (parsed by Prometheus' own text parser) and its status page."""

from __future__ import annotations

import aiohttp
from agent_harness import AgentHarness
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from mt5fleet.client.adapters.status import bound_port, build_app, serve
from mt5fleet.client.app.status_view import agent_status

EXPECTED_SERIES = {
    "mt5fleet_agent_nats_connected", "mt5fleet_agent_nats_reconnects", "mt5fleet_agent_terminal_connected",
    "mt5fleet_agent_messages_published", "mt5fleet_agent_publish_latency_seconds",
    "mt5fleet_agent_command_latency_seconds", "mt5fleet_agent_slippage_points", "mt5fleet_agent_commands",
    "mt5fleet_agent_commands_rejected", "mt5fleet_agent_mt5_errors", "mt5fleet_agent_price_staleness_seconds",
    "mt5fleet_agent_tick_rate", "mt5fleet_agent_outbox_depth", "mt5fleet_agent_invalid_messages",
    "mt5fleet_agent_terminal_server_offset_seconds", "mt5fleet_agent_terminal_server_offset_measured_timestamp_seconds",
    "mt5fleet_agent_ready", "mt5fleet_agent_not_ready", "mt5fleet_agent_alive", "mt5fleet_agent_catchup_failing",
    "mt5fleet_agent_commands_held", "mt5fleet_agent_clock_skew_seconds", "mt5fleet_agent_clock_correction_seconds",
}


async def test_metrics_parse_and_carry_the_named_series(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path) as h:
        command = h.command()
        await h.send(command)
        await h.report(command.command_id)
        refused = h.command(symbol="USDJPY")  # monitored, not traded: refused
        await h.send(refused)
        await h.report(refused.command_id)
        await wait_for(lambda: h.agent.streams.position_rows, "positions on the status page")
        await wait_for(lambda: h.agent.metrics.server_offset_measured._value.get() > 0, "the server time measured")
        runner = await serve(build_app(lambda: agent_status(h.agent), h.agent.metrics.registry), "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{bound_port(runner)}/metrics") as response:
                    assert response.status == 200
                    text = await response.text()
                    assert response.headers["Content-Type"].startswith("text/plain")
                async with session.get(f"http://127.0.0.1:{bound_port(runner)}/") as page:
                    html = await page.text()
                async with session.get(f"http://127.0.0.1:{bound_port(runner)}/api/status") as api:
                    status = await api.json()
        finally:
            await runner.cleanup()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert EXPECTED_SERIES <= set(families), EXPECTED_SERIES - set(families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("mt5fleet_agent_nats_connected", ())] == 1
    assert samples[("mt5fleet_agent_commands_total", (("status", "filled"),))] == 1
    assert samples[("mt5fleet_agent_commands_rejected_total", (("reason", "symbol_not_allowed"),))] == 1
    assert samples[("mt5fleet_agent_command_latency_seconds_count", (("stage", "signal_to_executed"),))] == 1
    assert samples[("mt5fleet_agent_messages_published_total", (("kind", "execution"),))] >= 1
    assert "mt5fleet agent" in html and "alice" in html and "EURUSD" in html and command.command_id in html
    assert status["user_id"] == "alice" and status["nats_connected"] and status["positions"]
    # The simulated broker's server runs on GMT+2 in November, and the agent says so.
    assert samples[("mt5fleet_agent_terminal_server_offset_seconds", ())] == 7200
    assert status["server_time"]["offset_s"] == 7200 and status["server_time"]["source"] == "measured"
    assert samples[("mt5fleet_agent_not_ready", (("reason", "nats_disconnected"),))] == 0
    assert status["ready"] and status["alive"] and status["catchup"]["state"] == "done" and "Health:" in html
    assert "UTC+02:00 (GMT+2/+3 New York close, measured)" in html

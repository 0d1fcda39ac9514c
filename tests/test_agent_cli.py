"""`mt5fleet agent --config FILE` as a trader runs it: starts, serves its status page and
metrics on localhost, streams to NATS, and on SIGTERM drains and exits cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request

import nats
import pytest
from waiting import eventually, wait_for

from mt5fleet.client.adapters.config_file import parse_settings
from mt5fleet.client.core.settings import ConfigError
from mt5fleet.launcher.agent import check_simulated_broker
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode()


async def test_the_agent_command_runs_serves_and_stops_cleanly(fresh_nats_server, tmp_path):
    client = await nats.connect(fresh_nats_server.url)
    await bootstrap.bootstrap(client.jetstream(), subjects.build_layout())
    status_port, metrics_port = _free_port(), _free_port()
    config = tmp_path / "agent.toml"
    config.write_text(f"""
user_id = "bob"
data_dir = "{tmp_path / 'data'}"
[nats]
servers = ["{fresh_nats_server.url}"]
[mt5]
backend = "simulated"
[simulated]
broker = "fbs-cent"
[symbols]
trading = ["EURUSD"]
[intervals]
prices_s = 0.5
[status]
port = {status_port}
[metrics]
port = {metrics_port}
""")
    process = subprocess.Popen([sys.executable, "-m", "mt5fleet.launcher.cli", "agent", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        page = await eventually(lambda: _get(f"http://127.0.0.1:{status_port}/"), "the status page showing EURUSDi",
                                until=lambda page: "EURUSDi" in page, retry_on=(OSError,), interval=0.1)
        assert "mt5fleet agent" in page and "EURUSDi" in page  # fbs-cent's suffix, shown beside EURUSD

        async def prices_stored() -> int:
            info = await client.jetstream().stream_info(subjects.PRICES_STREAM, subjects_filter="tc.bob.prices")
            return info.state.messages
        # NATS connects in the background; prices follow within an interval.
        await wait_for(prices_stored, "a price batch stored on tc.bob.prices", timeout=5)
        assert "mt5fleet_agent_nats_connected 1.0" in _get(f"http://127.0.0.1:{metrics_port}/metrics")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
        await client.close()
    assert process.returncode == 0, output
    assert "draining the outbox" in output and "Traceback" not in output


def test_agent_without_config_says_what_it_needs():
    result = subprocess.run([sys.executable, "-m", "mt5fleet.launcher.cli", "agent"], capture_output=True, text=True)
    assert result.returncode == 1 and "needs --config" in result.stderr


def _settings(broker: str, backend: str = "simulated"):
    return parse_settings({"user_id": "bob", "nats": {"servers": ["nats://127.0.0.1:4222"]},
                           "mt5": {"backend": backend}, "simulated": {"broker": broker}})


def test_the_launcher_names_the_known_brokers_when_the_simulated_one_is_unknown():
    # The config reader does not know the simulator's presets (production code never imports
    # it); the composition root that builds the simulated terminal checks the name.
    with pytest.raises(ConfigError, match=r"^simulated.broker: 'IC Markets' is not one of icm-raw, exness-m, "):
        check_simulated_broker(_settings("IC Markets"))
    check_simulated_broker(_settings("fbs-cent"))
    check_simulated_broker(_settings("IC Markets", backend="metatrader5"))  # no simulator: the name is unused


def test_an_unknown_simulated_broker_stops_the_agent_before_anything_starts(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(f"""
user_id = "bob"
data_dir = "{tmp_path / 'data'}"
[nats]
servers = ["nats://127.0.0.1:4222"]
[mt5]
backend = "simulated"
[simulated]
broker = "IC Markets"
""")
    result = subprocess.run([sys.executable, "-m", "mt5fleet.launcher.cli", "agent", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "mt5fleet: error: simulated.broker: 'IC Markets' is not one of icm-raw, " in result.stderr
    assert not (tmp_path / "data").exists()  # no store opened, no terminal, no NATS

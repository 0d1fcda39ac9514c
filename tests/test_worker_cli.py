"""`mt5fleet worker adjust` as Kubernetes runs it: probes and metrics answer, and SIGTERM
hands the partitions over at once and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import urllib.request

import nats

from mt5fleet.proto import bootstrap, subjects


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, response.read().decode()


async def test_adjust_worker_process_probes_metrics_and_sigterm(fresh_nats_server):
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "mt5fleet.proto.cli", "worker", "adjust", "--server",
                                fresh_nats_server.url, "--http-host", "127.0.0.1", "--http-port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        metrics = ""
        for _ in range(100):
            try:
                metrics = _get(f"http://127.0.0.1:{port}/metrics")[1]
                if "mt5fleet_worker_partitions_owned 8.0" in metrics:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.1)
        assert "mt5fleet_worker_partitions_owned 8.0" in metrics
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    kv = await js.key_value(subjects.LEASES_BUCKET)
    for partition in range(subjects.ADJUST_PARTITIONS):
        lease = json.loads((await kv.get(subjects.lease_key(partition))).value)
        assert lease["expires_ms"] <= _now_ms()  # handed over at once, not after the ttl
    await client.close()


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)

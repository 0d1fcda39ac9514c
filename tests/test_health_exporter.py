"""Fleet health: agents' heartbeats become per-user in-cluster metrics; a silent agent shows
as disconnected without any new message; a bad heartbeat is counted and skipped."""

from __future__ import annotations

import nats
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import ManualClock, now_ms
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.v1 import heartbeat_pb2
from mt5fleet.workers.app.health_exporter import FleetHealth

NOW = 1_795_014_000_000


def _samples(health: FleetHealth) -> dict:
    text = generate_latest(health.registry()).decode()
    return {(s.name, s.labels.get("user_id")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_heartbeats_become_per_user_metrics(fresh_nats_server):
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    clock = ManualClock(NOW / 1000)
    health = FleetHealth(now_ms=lambda: now_ms(clock))
    for user, outbox in (("alice", 0), ("bob", 7)):
        beat = heartbeat_pb2.Heartbeat(user_id=user, agent_version="0.1.0", terminal_connected=True,
                                       outbox_depth=outbox, last_command_latency_ms=42.5, timestamp=NOW - 1000,
                                       session_id="s1")
        await js.publish(subjects.user_subject(user, subjects.Channel.HEARTBEAT), beat.SerializeToString())
    await js.publish(subjects.user_subject("carol", subjects.Channel.HEARTBEAT), b"\x00garbage")
    follower = await health.follow(client)  # started after the beats: rebuilt from the stream
    await wait_for(lambda: len(health.beats) == 2 and health.invalid == 1, "two heartbeats and the bad one read",
                   timeout=5)
    samples = _samples(health)
    assert samples[("mt5fleet_fleet_agent_connected", "alice")] == 1.0
    assert samples[("mt5fleet_fleet_outbox_depth", "bob")] == 7
    assert samples[("mt5fleet_fleet_command_latency_ms", "alice")] == 42.5
    assert samples[("mt5fleet_fleet_invalid_heartbeats", None)] == 1
    clock.advance(60)  # a minute of silence
    samples = _samples(health)
    assert samples[("mt5fleet_fleet_agent_connected", "alice")] == 0.0
    assert samples[("mt5fleet_fleet_heartbeat_age_seconds", "alice")] == 61.0
    await follower.stop()
    await client.close()

"""The agent's NATS connection: TLS with the platform's CA, and failover across URLs."""

from __future__ import annotations

import dataclasses
import logging
import ssl

import nats
import pytest
from agent_harness import AgentHarness
from waiting import wait_for

from mt5fleet.client.app.agent import Agent
from mt5fleet.proto.runtime import tlsgen
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats, TlsFiles
from mt5fleet.proto.runtime.natsconn import NatsSettings, connect


@pytest.fixture
def tls_server(tmp_path):
    bundle = tlsgen.generate(tmp_path / "tls")
    with EmbeddedNats(tls=TlsFiles(bundle.server_cert, bundle.server_key)) as server:
        yield server, bundle


async def test_tls_with_the_platforms_ca_is_required_and_works(tls_server):
    server, bundle = tls_server
    assert server.url.startswith("tls://")
    client = await connect(NatsSettings(servers=(server.url,), tls_ca=str(bundle.ca_cert), reconnect=False))
    assert client.is_connected and client.connected_url.scheme == "tls"
    await client.close()
    with pytest.raises(Exception) as refused:  # a client that does not trust the CA gets nowhere
        await nats.connect(server.url, tls=ssl.create_default_context(), allow_reconnect=False,
                           max_reconnect_attempts=1, connect_timeout=2)
    assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value) or isinstance(refused.value, nats.errors.Error)


async def test_the_agent_trades_over_tls(tmp_path, tls_server):
    server, bundle = tls_server
    async with AgentHarness(server, tmp_path, nats={"tls_ca": str(bundle.ca_cert)}) as h:
        command = h.command()
        await h.send(command)
        assert (await h.report(command.command_id)).filled_volume > 0
        assert h.agent.nc.connected_url.scheme == "tls"


async def test_the_agent_fails_over_to_the_next_url(fresh_nats_server, tmp_path):
    dead = "nats://127.0.0.1:1"
    async with AgentHarness(fresh_nats_server, tmp_path, nats={"servers": [dead, fresh_nats_server.url]}) as h:
        command = h.command()
        await h.send(command)
        assert (await h.report(command.command_id)).filled_volume > 0
        assert h.agent.nc.connected_url.port == fresh_nats_server.port


async def test_an_agent_that_does_not_trust_the_server_says_so_and_connects_once_its_ca_is_fixed(
        tmp_path, tls_server, caplog):
    """A wrong CA file on the VPS (an old bundle, a copy-paste slip): the agent does not sit
    silent on a connection that can never be made. It says why, again and again, and connects
    once the right CA is in place (``agent init --force`` with a new bundle), without a restart."""
    server, bundle = tls_server
    wrong = tlsgen.generate(tmp_path / "other-ca")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(wrong.ca_cert.read_bytes())
    async with AgentHarness(server, tmp_path, start_agent=False, nats={"tls_ca": str(bundle.ca_cert)}) as h:
        h.settings = dataclasses.replace(h.settings, nats=dataclasses.replace(h.settings.nats, tls_ca=str(ca_file),
                                                                             connect_timeout_s=1.0))
        agent = Agent(h.settings, h.sim, clock=h.agent_clock, health=h.health)
        h.agent = agent
        with caplog.at_level(logging.WARNING, logger="mt5fleet.agent"):
            await agent.start()
            await wait_for(lambda: sum("NATS connection failed" in r.getMessage() for r in caplog.records) >= 2,
                           "the failure said twice", timeout=60)
        assert agent.nc is None or not agent.nc.is_connected
        assert any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() or "certificate" in r.getMessage().lower()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        ca_file.write_bytes(bundle.ca_cert.read_bytes())        # the right CA, the agent still running
        await wait_for(lambda: agent.nc is not None and agent.nc.is_connected, "connected with the right CA",
                       timeout=90)
        command = h.command()
        await h.send(command)
        assert (await h.report(command.command_id)).filled_volume > 0

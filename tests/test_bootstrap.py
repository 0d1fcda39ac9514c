"""`mt5fleet nats bootstrap`: creates the layout, changes nothing the second time, applies
a changed limit, and repairs what was deleted behind its back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mt5fleet.proto import subjects as s
from mt5fleet.proto.runtime import bootstrap as b


async def test_first_run_creates_everything_as_defined(nc):
    js = nc.jetstream()
    layout = s.build_layout()
    changes = await b.bootstrap(js, layout)
    assert {c.action for c in changes} == {b.Action.CREATED}
    assert len(changes) == len(layout.streams) + len(layout.buckets) + len(layout.consumers)
    prices = (await js.stream_info(s.PRICES_STREAM)).config
    assert prices.subjects == ["tc.*.prices"] and prices.max_msgs_per_subject == 3
    assert prices.storage == "memory" and prices.max_age == 60
    commands = (await js.stream_info(s.COMMANDS_STREAM)).config
    assert commands.duplicate_window == 86_400 and commands.storage == "file"
    kv = await js.key_value(s.CONFIG_BUCKET)
    await kv.put("alice", b"cfg")
    assert (await kv.get("alice")).value == b"cfg"
    consumer = await js.consumer_info(s.SIGNALS_STREAM, s.adjust_consumer(0))
    assert consumer.config.ack_policy == "explicit"


async def test_second_run_changes_nothing(nc):
    js = nc.jetstream()
    await b.bootstrap(js, s.build_layout())
    before = await js.account_info()
    changes = await b.bootstrap(js, s.build_layout())
    assert {c.action for c in changes} == {b.Action.UNCHANGED}
    after = await js.account_info()
    assert (after.streams, after.consumers) == (before.streams, before.consumers)


async def test_changed_limits_are_applied_and_reported(nc):
    js = nc.jetstream()
    await b.bootstrap(js, s.build_layout())
    await js.publish("tc.alice.executions", b"report")  # data survives an update
    changed = s.build_layout({
        "streams": {"TC_EXECUTIONS": {"max_age_s": 30 * 86_400}},
        "buckets": {"tc-config": {"history": 10}},
        "consumers": {"adjust-p0": {"max_ack_pending": 500}},
    })
    changes = {c.name: c for c in await b.bootstrap(js, changed)}
    assert changes["TC_EXECUTIONS"].action is b.Action.UPDATED
    assert "max_age" in changes["TC_EXECUTIONS"].details[0]
    assert changes["tc-config"].action is b.Action.UPDATED
    assert changes["SIGNALS/adjust-p0"].action is b.Action.UPDATED
    assert changes["TC_PRICES"].action is b.Action.UNCHANGED
    info = await js.stream_info("TC_EXECUTIONS")
    assert info.config.max_age == 30 * 86_400 and info.state.messages == 1
    assert (await js.stream_info("KV_tc-config")).config.max_msgs_per_subject == 10
    assert (await js.consumer_info("SIGNALS", "adjust-p0")).config.max_ack_pending == 500


async def test_a_deleted_stream_comes_back(nc):
    js = nc.jetstream()
    await b.bootstrap(js, s.build_layout())
    await js.delete_stream(s.SIGNALS_STREAM)
    changes = {c.name: c.action for c in await b.bootstrap(js, s.build_layout())}
    assert changes["SIGNALS"] is b.Action.CREATED
    assert changes["SIGNALS/adjust-p0"] is b.Action.CREATED


async def test_storage_change_is_refused_with_a_clear_reason(nc):
    js = nc.jetstream()
    await b.bootstrap(js, s.build_layout())
    with pytest.raises(b.BootstrapError, match="TC_PRICES: storage: memory -> file cannot be changed in place"):
        await b.bootstrap(js, s.build_layout({"streams": {"TC_PRICES": {"storage": "file"}}}))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mt5fleet.launcher.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_bootstrap_is_idempotent_and_applies_a_config_file(fresh_nats_server, tmp_path):
    first = _cli("nats", "bootstrap", "--server", fresh_nats_server.url)
    assert first.returncode == 0, first.stderr
    assert "21 created, 0 updated, 0 unchanged" in first.stdout
    second = _cli("nats", "bootstrap", "--server", fresh_nats_server.url)
    assert "0 created, 0 updated, 21 unchanged" in second.stdout
    config = tmp_path / "js.toml"
    config.write_text("[streams.TC_PRICES]\nmax_age_s = 30\n")
    third = _cli("nats", "bootstrap", "--server", fresh_nats_server.url, "--config", str(config))
    assert "TC_PRICES" in third.stdout and "max_age: 60.0 -> 30" in third.stdout
    assert "0 created, 1 updated, 20 unchanged" in third.stdout


def test_cli_reports_an_unreachable_server_in_one_line():
    result = _cli("nats", "bootstrap", "--server", "nats://127.0.0.1:1")
    assert result.returncode == 1
    assert "mt5fleet: error: could not connect to any NATS server" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_reports_a_typo_in_the_config_file(fresh_nats_server, tmp_path):
    config = tmp_path / "js.toml"
    config.write_text("[streams.TC_PRICE]\nmax_age_s = 30\n")
    result = _cli("nats", "bootstrap", "--server", fresh_nats_server.url, "--config", str(config))
    assert result.returncode == 1 and "unknown stream(s) ['TC_PRICE']" in result.stderr

"""Subject names and the JetStream layout: the names every component relies on."""

from __future__ import annotations

import pytest

from mt5fleet.proto import subjects as s


def test_user_subjects_follow_the_contract():
    assert s.user_subject("alice", s.Channel.PRICES) == "tc.alice.prices"
    assert s.user_subject("user-42", s.Channel.COMMANDS) == "tc.user-42.commands"
    assert s.user_wildcard(s.Channel.EXECUTIONS) == "tc.*.executions"
    assert s.signal_subject("EURUSD") == "signals.EURUSD"
    assert s.market_data_subject("XAUUSD") == "md.XAUUSD"


@pytest.mark.parametrize("bad", ["Alice", "a.b", "a*", ">", "", "-a", "a-", "a" * 64, "alice\n", "a b"])
def test_user_ids_that_are_not_dns_labels_are_refused(bad):
    with pytest.raises(s.InvalidName, match="DNS label"):
        s.user_subject(bad, s.Channel.PRICES)


@pytest.mark.parametrize("bad", ["eurusd", "EURUSD.m", "EU", "EUR USD", "EURUSD\n", "*", "1EURUSD"])
def test_broker_aliases_and_malformed_symbols_never_make_a_subject(bad):
    with pytest.raises(s.InvalidName, match="canonical symbol"):
        s.signal_subject(bad)


def test_parsing_is_the_inverse_of_naming():
    for channel in s.Channel:
        assert s.parse_user_subject(s.user_subject("bob-7", channel)) == ("bob-7", channel)
    assert s.symbol_of("md.GBPUSD") == "GBPUSD"
    with pytest.raises(s.InvalidName, match="unknown channel"):
        s.parse_user_subject("tc.bob.orders")
    with pytest.raises(s.InvalidName):
        s.parse_user_subject("tc.bob.prices.extra")


def test_every_stored_channel_has_exactly_one_stream_and_the_catch_up_request_none():
    layout = s.build_layout()
    for channel in s.Channel:
        subject = s.user_subject("alice", channel)
        owners = [st.name for st in layout.streams if any(s.matches(p, subject) for p in st.subjects)]
        assert len(owners) == (1 if channel.stored else 0), (channel, owners)
    assert [c for c in s.Channel if not c.stored] == [s.Channel.CATCHUP]  # request/reply: never stored


def test_decision_records_have_one_subject_each_kept_as_long_as_execution_reports():
    layout = s.build_layout()
    decisions, executions = layout.stream(s.DECISIONS_STREAM), layout.stream(s.EXECUTIONS_STREAM)
    assert decisions.max_age_s == executions.max_age_s == 400 * 86_400 and decisions.storage is s.Storage.FILE
    odd = "sig.2026-11-18*>1"  # a signal id may hold what a subject token may not
    subject = s.decision_subject("alice", odd)
    assert subject == s.decision_subject("alice", odd) != s.decision_subject("alice", "sig.2026-11-18*>2")
    assert subject.split(".")[:2] == ["decisions", "alice"] and len(subject.split(".")) == 3
    owners = [st.name for st in layout.streams if any(s.matches(p, subject) for p in st.subjects)]
    assert owners == [s.DECISIONS_STREAM]
    assert s.matches(s.decisions_of_signal(odd), subject) and s.matches(s.decisions_of_user("alice"), subject)
    assert not s.matches(s.decisions_of_user("bob"), subject)
    # Never under tc.<uid>.*: every tenant grant and import is derived from those channels.
    assert not s.matches(f"{s.USER_PREFIX}.>", subject)


def test_default_limits_match_the_contract():
    layout = s.build_layout()
    prices = layout.stream(s.PRICES_STREAM)
    assert prices.max_msgs_per_subject <= 5 and 0 < prices.max_age_s <= 300  # latest batches, short age
    assert layout.stream(s.SYMBOLS_STREAM).max_msgs_per_subject == 1
    assert layout.stream(s.HEARTBEAT_STREAM).max_msgs_per_subject == 1
    assert layout.stream(s.MARKET_DATA_STREAM).max_msgs_per_subject == 1
    executions = layout.stream(s.EXECUTIONS_STREAM)
    assert executions.storage is s.Storage.FILE and executions.max_msgs_per_subject == 0
    commands = layout.stream(s.COMMANDS_STREAM)
    assert commands.storage is s.Storage.FILE and commands.duplicate_window_s >= 600
    assert layout.bucket(s.CONFIG_BUCKET).history >= 1
    # Never one live consumer per user: the fleet's durables are few and fixed.
    assert all("*" not in c.durable for c in layout.consumers) and len(layout.consumers) <= 2 + s.ADJUST_PARTITIONS


def test_partitions_are_stable_and_spread_users():
    assert s.partition_of("alice") == s.partition_of("alice") == 7  # the same in every process and release
    counts = [0] * s.ADJUST_PARTITIONS
    for n in range(8000):
        counts[s.partition_of(f"user-{n}")] += 1
    assert min(counts) > 800 and max(counts) < 1200


def test_overrides_change_only_what_they_name():
    layout = s.build_layout({"replicas": 3, "streams": {"TC_PRICES": {"max_age_s": 120, "storage": "file"}}})
    prices = layout.stream("TC_PRICES")
    assert (prices.max_age_s, prices.storage, prices.replicas) == (120, s.Storage.FILE, 3)
    assert layout.stream("TC_ACCOUNT").max_age_s == s.build_layout().stream("TC_ACCOUNT").max_age_s
    assert all(st.replicas == 3 for st in layout.streams) and layout.bucket("tc-config").replicas == 3


@pytest.mark.parametrize("overrides, message", [
    ({"streams": {"TC_PRICE": {}}}, "unknown stream"),
    ({"streams": {"TC_PRICES": {"max_agee_s": 1}}}, "unknown setting"),
    ({"buckets": {"tc-config": {"colour": 1}}}, "unknown setting"),
    ({"consumers": {"nope": {}}}, "unknown consumer"),
    ({"replicas": 9}, "replicas"),
    ({"stream": {}}, "unknown JetStream settings"),
    ({"streams": {"TC_COMMANDS": {"max_age_s": 60}}}, "duplicate_window_s .* cannot exceed max_age_s"),
    ({"buckets": {"tc-config": {"history": 0}}}, "history must be 1..64"),
])
def test_typos_in_overrides_are_errors_not_ignored(overrides, message):
    with pytest.raises(ValueError, match=message):
        s.build_layout(overrides)

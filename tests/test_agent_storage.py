"""The agent's durable storage and secrets: outbox, command ledger, price buffer, credentials.

Real sqlite files on tmp_path; crashes are real processes killed with SIGKILL.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import logging
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest
from factories import NOW_MS, execution

from mt5fleet.client.adapters.ledger import CommandLedger, LedgerError, LedgerState
from mt5fleet.client.adapters.outbox import Outbox, OutboxError, OutboxFull
from mt5fleet.client.adapters.pricebuffer import DEFAULT_CAPACITY, PriceBuffer
from mt5fleet.client.app import keys
from mt5fleet.proto.domain.clock import ManualClock, now_ms
from mt5fleet.proto.domain.ids import command_id_for, command_id_of_report, magic_for, report_message_id
from mt5fleet.proto.domain.market import Quote
from mt5fleet.proto.runtime import sealing as credentials
from mt5fleet.proto.runtime.sealing import AgentKey, CredentialError, SealedPassword, Secret, load_key, seal, unseal
from mt5fleet.proto.v1 import config_pb2, execution_pb2

SUBJECT = "tc.alice.executions"
DAY_MS = 86_400_000


def _kill(process: subprocess.Popen[str]) -> None:
    # SIGKILL: no handler, no atexit, no sqlite close. (Windows has no SIGKILL; os.kill there terminates.)
    os.kill(process.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    process.wait(timeout=10)


def _start_child(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)


# ------------------------------------------------------------------------------ outbox

def test_outbox_delivers_in_append_order_with_increasing_seq(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        seqs = [outbox.append(SUBJECT, f"m{i}", f"payload {i}".encode(), "execution") for i in range(5)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
        entries = outbox.pending()
        assert [e.msg_id for e in entries] == ["m0", "m1", "m2", "m3", "m4"]
        assert [e.seq for e in entries] == seqs
        assert (entries[2].subject, entries[2].payload, entries[2].kind) == (SUBJECT, b"payload 2", "execution")
        assert [e.msg_id for e in outbox.pending(limit=2)] == ["m0", "m1"]
        assert outbox.depth() == 5


def test_outbox_keeps_duplicate_msg_ids_in_order(tmp_path: Path) -> None:
    # A retried append (same msg_id) is kept: JetStream dedupes on the wire, order is kept here.
    with Outbox(tmp_path / "outbox.db") as outbox:
        outbox.append(SUBJECT, "a", b"1", "execution")
        outbox.append(SUBJECT, "b", b"2", "execution")
        outbox.append(SUBJECT, "a", b"1", "execution")
        assert [e.msg_id for e in outbox.pending()] == ["a", "b", "a"]


def test_outbox_survives_reopen_and_never_reuses_a_seq(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    first, second, third = (outbox.append(SUBJECT, f"m{i}", b"x", "account") for i in range(3))
    outbox.mark_sent(first)
    outbox.mark_sent(third)  # the newest row is gone: a naive rowid would hand its seq out again
    outbox.close()

    reopened = Outbox(path)
    assert [e.seq for e in reopened.pending()] == [second]
    assert reopened.depth() == 1
    assert reopened.append(SUBJECT, "m3", b"x", "account") > third
    reopened.close()


def test_outbox_appends_survive_a_killed_writer(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    child = _start_child(f"""
        import itertools, sys
        from mt5fleet.client.adapters.outbox import Outbox
        outbox = Outbox({str(path)!r})
        for i in itertools.count():
            seq = outbox.append("tc.alice.account", f"m{{i}}", b"%d" % i, "account")
            print(seq, flush=True)  # printed only after append() returned: a promise of durability
    """)
    assert child.stdout is not None
    acknowledged = [int(child.stdout.readline()) for _ in range(200)]
    _kill(child)

    with Outbox(path) as outbox:
        stored = outbox.pending(limit=1_000_000)
        assert [e.seq for e in stored][:200] == acknowledged
        assert [e.payload for e in stored] == [b"%d" % i for i in range(len(stored))]
        assert outbox.depth() == len(stored)
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_mark_sent_is_idempotent_and_touches_nothing_else(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        a, b = outbox.append(SUBJECT, "a", b"1", "execution"), outbox.append(SUBJECT, "b", b"2", "execution")
        outbox.mark_sent(a)
        outbox.mark_sent(a)
        outbox.mark_sent(12345)
        assert [e.seq for e in outbox.pending()] == [b]
        assert outbox.depth() == 1


def test_outbox_full_is_an_error_and_drops_nothing(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    outbox = Outbox(path, max_bytes=4_000)
    seqs = []
    with pytest.raises(OutboxFull, match="is full"):
        for i in range(100):
            seqs.append(outbox.append(SUBJECT, f"m{i}", b"x" * 500, "execution"))
    assert 0 < len(seqs) < 100
    assert [e.seq for e in outbox.pending()] == seqs
    outbox.close()

    # The budget is counted from the file on reopen, not from memory.
    outbox = Outbox(path, max_bytes=4_000)
    with pytest.raises(OutboxFull):
        outbox.append(SUBJECT, "late", b"x" * 500, "execution")
    outbox.mark_sent(seqs[0])
    assert outbox.append(SUBJECT, "late", b"x" * 500, "execution") > seqs[-1]
    outbox.close()


def test_oldest_age_is_the_wait_of_the_oldest_unsent_entry(tmp_path: Path) -> None:
    clock = ManualClock(NOW_MS / 1000)
    with Outbox(tmp_path / "outbox.db", clock_ms=lambda: now_ms(clock)) as outbox:
        assert outbox.oldest_age_s(NOW_MS) == 0.0
        first = outbox.append(SUBJECT, "a", b"1", "execution")
        clock.advance(5)
        outbox.append(SUBJECT, "b", b"2", "execution")
        assert outbox.oldest_age_s(NOW_MS + 12_500) == 12.5
        outbox.mark_sent(first)
        assert outbox.oldest_age_s(NOW_MS + 12_500) == 7.5


def test_outbox_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match="not a usable outbox"):
        Outbox(path)


# ------------------------------------------------------------------------------ ledger

def _report(command_id: str, status: int = execution_pb2.EXECUTION_STATUS_FILLED) -> bytes:
    return execution(command_id=command_id, status=status).SerializeToString()


def _begin(ledger: CommandLedger, command_id: str, stream_seq: int | None = None, received: int = NOW_MS) -> bool:
    return ledger.begin(command_id, magic=magic_for(command_id), stream_seq=stream_seq, received_at_ms=received)


def test_begin_records_the_intent_once_and_refuses_a_duplicate(tmp_path: Path) -> None:
    command_id = command_id_for("sig-1", "alice")
    with CommandLedger(tmp_path / "ledger.db", clock_ms=lambda: NOW_MS + 1) as ledger:
        assert ledger.get(command_id) is None
        assert _begin(ledger, command_id, stream_seq=7) is True
        assert _begin(ledger, command_id, stream_seq=7) is False
        entry = ledger.get(command_id)
        assert entry is not None
        assert (entry.magic, entry.stream_seq, entry.received_at_ms) == (magic_for(command_id), 7, NOW_MS)
        assert (entry.state, entry.status, entry.report, entry.updated_at_ms) == (LedgerState.BEGUN, None, None,
                                                                                 NOW_MS + 1)


def test_a_command_begun_before_a_kill_is_in_flight_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    child = _start_child(f"""
        import time
        from mt5fleet.client.adapters.ledger import CommandLedger
        ledger = CommandLedger({str(path)!r})
        ledger.begin("mf1crashed", magic=42, stream_seq=9, received_at_ms=1)
        print("begun", flush=True)
        time.sleep(60)  # "order_send" in progress when the process dies
    """)
    assert child.stdout is not None and child.stdout.readline().strip() == "begun"
    _kill(child)

    with CommandLedger(path) as ledger:
        assert [e.command_id for e in ledger.in_flight()] == ["mf1crashed"]
        assert _begin(ledger, "mf1crashed") is False  # the replayed command is not executed again
        assert ledger.last_stream_seq() == 9


def test_in_flight_and_unreported_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = CommandLedger(path)
    for name in ("done", "begun", "reported"):
        _begin(ledger, name)
    ledger.record_outcome("done", "FILLED", _report("done"))
    ledger.record_outcome("reported", "REJECTED", _report("reported"))
    ledger.mark_reported("reported")
    # No close(): the process "crashed"; a new connection sees what was committed.
    with CommandLedger(path) as reopened:
        assert [e.command_id for e in reopened.in_flight()] == ["begun"]
        unreported = reopened.unreported()
        assert [(e.command_id, e.state, e.status) for e in unreported] == [("done", LedgerState.DONE, "FILLED")]
        report = execution_pb2.ExecutionReport.FromString(unreported[0].report)
        assert report.command_id == "done"
        assert reopened.get("reported").state is LedgerState.REPORTED
    ledger.close()


def test_outcomes_are_recorded_once(tmp_path: Path) -> None:
    with CommandLedger(tmp_path / "ledger.db") as ledger:
        with pytest.raises(LedgerError, match="without begin"):
            ledger.record_outcome("never-begun", "FILLED", b"r")
        _begin(ledger, "c1")
        ledger.record_outcome("c1", "FILLED", b"report")
        ledger.record_outcome("c1", "FILLED", b"report")  # a retried call: no-op
        with pytest.raises(LedgerError, match="already DONE"):
            ledger.record_outcome("c1", "REJECTED", b"other")
        assert (ledger.get("c1").status, ledger.get("c1").report) == ("FILLED", b"report")


def test_mark_reported_is_idempotent_and_needs_an_outcome(tmp_path: Path) -> None:
    with CommandLedger(tmp_path / "ledger.db") as ledger:
        _begin(ledger, "c1")
        with pytest.raises(LedgerError, match="no outcome yet"):
            ledger.mark_reported("c1")
        with pytest.raises(LedgerError, match="unknown"):
            ledger.mark_reported("c2")
        ledger.record_outcome("c1", "FILLED", b"report")
        ledger.mark_reported("c1")
        ledger.mark_reported("c1")
        assert ledger.unreported() == [] and ledger.get("c1").state is LedgerState.REPORTED
        with pytest.raises(LedgerError):
            ledger.record_outcome("c1", "FAILED", b"late")


def test_last_stream_seq_is_the_high_water_mark(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with CommandLedger(path) as ledger:
        assert ledger.last_stream_seq() == 0
        _begin(ledger, "c5", stream_seq=5)
        _begin(ledger, "c3", stream_seq=3)          # arrived late: the mark does not go back
        _begin(ledger, "live", stream_seq=None)     # live delivery carries no stream sequence
        assert ledger.last_stream_seq() == 5
        _begin(ledger, "c3", stream_seq=8)          # a duplicate replayed at 8 was handled too
        ledger.advance_stream_seq(6)                # an undecodable message at 6: no entry, never lower
        assert ledger.last_stream_seq() == 8
        ledger.advance_stream_seq(11)
    with CommandLedger(path) as reopened:
        assert reopened.last_stream_seq() == 11


def test_prune_removes_only_old_reported_entries(tmp_path: Path) -> None:
    clock = ManualClock((NOW_MS - 40 * DAY_MS) / 1000)
    with CommandLedger(tmp_path / "ledger.db", clock_ms=lambda: now_ms(clock)) as ledger:
        for name in ("old-reported", "old-done", "old-begun"):
            _begin(ledger, name, stream_seq=100, received=now_ms(clock))
        ledger.record_outcome("old-reported", "FILLED", b"r")
        ledger.mark_reported("old-reported")
        ledger.record_outcome("old-done", "FILLED", b"r")
        clock.advance(40 * DAY_MS / 1000)
        _begin(ledger, "new-reported", received=NOW_MS)
        ledger.record_outcome("new-reported", "FILLED", b"r")
        ledger.mark_reported("new-reported")

        assert ledger.prune(NOW_MS - 30 * DAY_MS) == 1
        assert ledger.get("old-reported") is None
        assert {"old-done", "old-begun", "new-reported"} == {
            name for name in ("old-done", "old-begun", "new-reported") if ledger.get(name)
        }
        assert [e.command_id for e in ledger.in_flight()] == ["old-begun"]
        assert [e.command_id for e in ledger.unreported()] == ["old-done"]
        assert ledger.last_stream_seq() == 100  # pruning never moves the catch-up start back


# ------------------------------------------------------------------------------ price buffer

def _quote(i: int) -> Quote:
    return Quote(symbol="EURUSD", bid=1.085 + i * 1e-5, ask=1.0851 + i * 1e-5, time_ms=NOW_MS + i, spread_points=10)


def test_price_buffer_keeps_the_newest_and_counts_the_dropped() -> None:
    buffer: PriceBuffer[Quote] = PriceBuffer()
    assert buffer.capacity == DEFAULT_CAPACITY == 1_000
    for i in range(1_005):
        buffer.add(_quote(i))
    assert len(buffer) == 1_000
    assert buffer.dropped == 5
    drained = buffer.drain()
    assert [q.time_ms for q in drained] == [NOW_MS + i for i in range(5, 1_005)]
    assert len(buffer) == 0 and buffer.drain() == []
    buffer.add(_quote(2_000))
    assert buffer.dropped == 5 and len(buffer) == 1


def test_price_buffer_rejects_a_useless_capacity() -> None:
    with pytest.raises(ValueError):
        PriceBuffer(0)


# ------------------------------------------------------------------------------ credentials

PASSWORD = "Tr4der-P@ss!word"
LOGIN, SERVER = 5012345, "Broker-Demo"


KEY_TEXT = credentials.generate_key()


@pytest.fixture
def key() -> AgentKey:
    return AgentKey(base64.b64decode(KEY_TEXT), "test")


def _key_file(folder: Path, text: str, encoding: str = "ascii") -> Path:
    path = folder / "agent.key"
    path.write_text(text, encoding=encoding)
    return path


def test_seal_and_unseal_round_trip_with_a_fresh_nonce(key: AgentKey) -> None:
    first = seal(PASSWORD, key, login=LOGIN, server=SERVER)
    second = seal(Secret(PASSWORD), key, login=LOGIN, server=SERVER)
    assert first.nonce != second.nonce and len(first.nonce) == 12
    assert PASSWORD.encode() not in first.ciphertext
    assert unseal(first, key, login=LOGIN, server=SERVER).reveal() == PASSWORD
    assert unseal(second, key, login=LOGIN, server=SERVER) == Secret(PASSWORD)
    assert first.key_id == key.key_id == hashlib.sha256(base64.b64decode(KEY_TEXT)).hexdigest()[:8]


def test_unseal_with_another_key_fails_naming_both_key_ids(key: AgentKey) -> None:
    sealed = seal(PASSWORD, key, login=LOGIN, server=SERVER)
    other = AgentKey(os.urandom(32), "other")
    with pytest.raises(CredentialError, match=f"sealed with key {key.key_id}.*{other.key_id}"):
        unseal(sealed, other, login=LOGIN, server=SERVER)
    # A forged key id does not help: GCM still refuses.
    forged = SealedPassword(sealed.nonce, sealed.ciphertext, other.key_id)
    with pytest.raises(CredentialError, match="tampered"):
        unseal(forged, other, login=LOGIN, server=SERVER)


@pytest.mark.parametrize("field", ["nonce", "ciphertext"])
def test_unseal_detects_tampering(key: AgentKey, field: str) -> None:
    sealed = seal(PASSWORD, key, login=LOGIN, server=SERVER)
    value = bytearray(getattr(sealed, field))
    value[-1] ^= 0x01
    tampered = dataclasses.replace(sealed, **{field: bytes(value)})
    with pytest.raises(CredentialError, match="tampered"):
        unseal(tampered, key, login=LOGIN, server=SERVER)


@pytest.mark.parametrize("login, server", [(LOGIN + 1, SERVER), (LOGIN, "Broker-Live")])
def test_a_sealed_password_does_not_open_for_another_account(key: AgentKey, login: int, server: str) -> None:
    sealed = seal(PASSWORD, key, login=LOGIN, server=SERVER)
    with pytest.raises(CredentialError, match="another login or server"):
        unseal(sealed, key, login=login, server=server)


def test_proto_round_trip(key: AgentKey) -> None:
    sealed = seal(PASSWORD, key, login=LOGIN, server=SERVER)
    wire = config_pb2.EncryptedCredentials.FromString(
        credentials.to_proto(sealed, login=LOGIN, server=SERVER).SerializeToString()
    )
    assert (wire.login, wire.server, wire.algorithm, wire.key_id) == (LOGIN, SERVER, "AES-256-GCM", key.key_id)
    back = credentials.from_proto(wire)
    assert back == sealed
    assert unseal(back, key, login=wire.login, server=wire.server).reveal() == PASSWORD
    with pytest.raises(CredentialError, match="only AES-256-GCM"):
        unseal(SealedPassword(back.nonce, back.ciphertext, back.key_id, "ChaCha20"), key, login=LOGIN, server=SERVER)


def test_text_round_trip_and_malformed_text(key: AgentKey) -> None:
    sealed = seal(PASSWORD, key, login=LOGIN, server=SERVER)
    text = credentials.to_text(sealed)
    assert text.startswith(f"v1:{key.key_id}:")
    assert credentials.from_text(text) == sealed
    for bad in (PASSWORD, "v2:" + text[3:], text.rsplit(":", 1)[0] + ":***", text.rsplit(":", 1)[0] + ":AAAA"):
        with pytest.raises(CredentialError) as caught:
            credentials.from_text(bad)
        assert bad not in str(caught.value) and PASSWORD not in str(caught.value)


def test_load_key_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file_key, env_key = credentials.generate_key(), credentials.generate_key()
    monkeypatch.setenv("MT5FLEET_AGENT_KEY", env_key)
    assert load_key().key_id == AgentKey(base64.b64decode(env_key)).key_id
    from_file = load_key(_key_file(tmp_path, "\ufeff" + file_key + "\r\n", "utf-8"))  # Notepad: BOM, CRLF
    assert from_file.key_id == AgentKey(base64.b64decode(file_key)).key_id
    # Windows PowerShell's `>` writes UTF-16.
    assert load_key(_key_file(tmp_path, file_key, "utf-16")).key_id == from_file.key_id


BAD_KEYS = {
    "short": (base64.b64encode(b"s3cr3t-but-too-short").decode(), "is 20 bytes, AES-256 needs 32"),
    "not base64": ("s3cr3t key material!!", "not valid base64"),
    "empty": ("   \n", "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_key_errors_name_the_source_but_never_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      case: str) -> None:
    text, problem = BAD_KEYS[case]
    path = _key_file(tmp_path, text)
    monkeypatch.setenv("MY_KEY", text)
    for load, source in ((lambda: load_key(path), f"key file {path}"),
                         (lambda: load_key(env_var="MY_KEY"), "environment variable MY_KEY")):
        with pytest.raises(CredentialError) as caught:
            load()
        message = str(caught.value)
        assert source in message and problem in message
        # The whole traceback, chained exceptions included, is what ends up in a log.
        logged = "".join(traceback.format_exception(caught.value))
        assert "s3cr3t" not in logged and (not text.strip() or text.strip() not in logged)


def test_missing_keys_say_where_to_put_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MT5FLEET_AGENT_KEY", raising=False)
    with pytest.raises(CredentialError, match="MT5FLEET_AGENT_KEY is not set"):
        load_key()
    with pytest.raises(CredentialError, match=r"agent\.key: not found"):
        load_key(tmp_path / "agent.key")


def test_secrets_never_print(key: AgentKey, caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(PASSWORD)
    sealed = seal(secret, key, login=LOGIN, server=SERVER)
    rendered = [repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>20}",
                repr([secret]), repr({"password": secret}), repr(key), str(key), repr(sealed)]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("mt5fleet.test").info("login %s key %s sealed %s", secret, key, sealed)
        logging.getLogger("mt5fleet.test").info(secret)
    for text in [*rendered, caplog.text]:
        assert PASSWORD not in text and KEY_TEXT not in text
        assert base64.b64encode(sealed.ciphertext).decode() not in text
    assert str(secret) == repr(secret) == "***"
    assert caplog.text.count("***") >= 2
    for thing in (secret, key):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(thing)


def test_sealing_refuses_bad_input(key: AgentKey) -> None:
    with pytest.raises(CredentialError, match="empty password"):
        seal("", key, login=LOGIN, server=SERVER)
    with pytest.raises(CredentialError, match="login must be a positive integer"):
        seal(PASSWORD, key, login=0, server=SERVER)
    with pytest.raises(CredentialError, match="server"):
        seal(PASSWORD, key, login=LOGIN, server="")


def test_command_line_generates_a_key_file_and_seals_from_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    key_path = tmp_path / "agent.key"
    assert keys.main(["generate-key", "--out", str(key_path)]) == 0
    assert keys.main(["generate-key", "--out", str(key_path)]) == 2  # never overwrites a key
    if os.name == "posix":
        assert key_path.stat().st_mode & 0o077 == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert keys.main(["seal", "--login", str(LOGIN), "--server", SERVER, "--key-file", str(key_path)]) == 0
    out = capsys.readouterr().out.strip()
    assert PASSWORD not in out
    assert unseal(credentials.from_text(out), load_key(key_path), login=LOGIN, server=SERVER).reveal() == PASSWORD


def test_report_ids_are_stable_for_an_agent_and_unguessable_for_others(tmp_path):
    # The agent's Nats-Msg-Id of a report: the same on every retry and after a restart (the
    # key lives in its ledger), different for any other key, and the command id read back.
    from mt5fleet.proto.domain.ids import command_id_for

    command_id = command_id_for("sig-1", "bob", "open")
    with CommandLedger(tmp_path / "ledger.sqlite3") as ledger:
        key = ledger.secret_key("report-ids")
    with CommandLedger(tmp_path / "ledger.sqlite3") as reopened:
        assert reopened.secret_key("report-ids") == key and len(key) == 32
    with CommandLedger(tmp_path / "other.sqlite3") as other:
        assert other.secret_key("report-ids") != key
    report_id = report_message_id(command_id, key)
    assert report_id == report_message_id(command_id, key) != report_message_id(command_id, b"guess")
    assert command_id_of_report(report_id) == (command_id, "report")
    assert command_id_of_report(report_message_id(command_id, key, "duplicate")) == (command_id, "duplicate")

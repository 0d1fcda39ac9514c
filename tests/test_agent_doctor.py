"""`mt5fleet agent doctor` against the simulated terminal and a real nats-server: what is
right says ok; what is wrong says FIX and what to do, in plain words."""

from __future__ import annotations

import tomllib

from agent_harness import raw_settings

from mt5fleet.client.core import doctor
from mt5fleet.launcher.cli import main


def _write(path, raw: dict) -> str:
    def value(v):
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    lines = [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for table, body in raw.items():
        if isinstance(body, dict):
            lines.append(f"[{table}]")
            lines += [f"{k} = {value(v)}" for k, v in body.items()]
    path.write_text("\n".join(lines) + "\n")
    tomllib.loads(path.read_text())
    return str(path)


def test_doctor_passes_what_is_right_and_names_what_to_fix(nats_server, tmp_path, capsys):
    raw = raw_settings(tmp_path, nats_server.url, symbols={"trading": ["EURUSD", "XAGEUR"], "monitoring": []})
    config = _write(tmp_path / "agent.toml", raw)
    assert main(["agent", "--config", config, "doctor"]) == 1
    out = capsys.readouterr().out
    lines = {line.split(": ")[0].strip() for line in out.splitlines() if line.startswith(("ok", "FIX"))}
    assert "ok   Outbox" in lines and "ok   MT5 terminal" in lines and "ok   Algo trading" in lines
    assert "ok   NATS credentials" in lines and "ok   Clock" in lines
    # A plain nats:// URL and a symbol the broker lacks: both named, with the fix.
    assert f"FIX  NATS {nats_server.url}" in lines and "use the platform's tls:// URL" in out
    assert "FIX  Symbols" in lines and "XAGEUR" in out and "[symbols.symbol_map]" in out
    assert "checks passed: fix the lines marked FIX" in out


def test_doctor_says_when_nats_is_not_there_and_the_outbox_cannot_be_written(tmp_path, capsys):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    raw = raw_settings(tmp_path, "nats://127.0.0.1:1", data_dir=str(blocked / "agent"))
    assert main(["agent", "doctor", "--config", _write(tmp_path / "agent.toml", raw)]) == 1
    out = capsys.readouterr().out
    assert "FIX  Outbox" in out and "not writable" in out
    assert "FIX  NATS nats://127.0.0.1:1: not reachable" in out and "FIX  NATS credentials" in out


def test_findings_in_plain_words():
    assert not doctor.algo_trading(False, True).ok and "Algo Trading" in doctor.algo_trading(False, True).fix
    assert not doctor.credentials(False, "nats: 'Authorization Violation'").ok
    assert "new bundle" in doctor.credentials(False, "nats: 'Authorization Violation'").fix
    assert not doctor.credentials(True, expires_in_s=3600).ok
    assert not doctor.clock(5.0).ok and "ahead of" in doctor.clock(5.0).detail and doctor.clock(0.4).ok
    assert doctor.clock(None).ok  # nothing to measure with: said, not failed
    # A broker on GMT+2, the host 1.5 s fast: only the remainder of the half hours is skew.
    assert doctor.skew_against_server_time(10_000_000 + 1_500, 10_000_000 + 7_200_000) == 1.5
    assert doctor.skew_against_server_time(10_000_000, 10_000_000 + 7_200_000 + 800) == -0.8

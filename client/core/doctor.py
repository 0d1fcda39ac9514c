"""``mt5fleet agent doctor``'s judgements, in plain words: each check's facts in, a finding
out (ok or not, what was seen, what to do). Pure: the app layer gathers the facts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# The host clock may be this far off the broker's before commands start to look expired.
CLOCK_TOLERANCE_S = 2.0


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FIX "
        return f"{mark} {self.check}: {self.detail}" + (f"\n      -> {self.fix}" if self.fix and not self.ok else "")


def terminal(connected: bool, logged_in: bool, error: str = "", account: str = "") -> Finding:
    if not connected:
        return Finding("MT5 terminal", False, f"not reachable: {error or 'no answer'}",
                       "start the MetaTrader 5 terminal under this Windows user; set mt5.terminal_path if several "
                       "are installed")
    if not logged_in:
        return Finding("MT5 terminal", False, "reachable but not logged in to a trade server",
                       "log the terminal in to your broker account (or set mt5.login, mt5.server and the sealed "
                       "mt5.password)")
    return Finding("MT5 terminal", True, f"reachable and logged in ({account})")


def algo_trading(terminal_allows: bool, account_allows: bool) -> Finding:
    if not terminal_allows:
        return Finding("Algo trading", False, "switched off in the terminal",
                       "press 'Algo Trading' in the terminal's toolbar (Tools > Options > Expert Advisors > "
                       "Allow algorithmic trading)")
    if not account_allows:
        return Finding("Algo trading", False, "the broker does not allow expert trading on this account",
                       "ask your broker to enable automated trading for the account")
    return Finding("Algo trading", True, "enabled in the terminal and for the account")


def symbols(wanted: Iterable[str], mapping: Mapping[str, str]) -> Finding:
    wanted = tuple(wanted)
    if not wanted:
        return Finding("Symbols", True, "none configured locally: the platform's configuration will name them")
    missing = [s for s in wanted if s not in mapping]
    found = ", ".join(f"{c}={b}" for c, b in mapping.items() if c in wanted)
    if missing:
        return Finding("Symbols", False, f"the broker offers no symbol for {', '.join(missing)} (found: "
                       f"{found or 'none'})", "add the broker's names under [symbols.symbol_map], e.g. "
                       f'{missing[0]} = "{missing[0]}.m"')
    return Finding("Symbols", True, f"all mapped: {found}")


def nats_url(url: str, reachable: bool, tls: bool, error: str = "") -> Finding:
    if not reachable:
        return Finding(f"NATS {url}", False, f"not reachable: {error}",
                       "check the URL, the firewall and DNS; for CERTIFICATE_VERIFY_FAILED set nats.tls_ca to the "
                       "platform's ca.crt")
    if not tls:
        return Finding(f"NATS {url}", False, "reachable without TLS: your credentials would cross the network "
                       "in the clear", "use the platform's tls:// URL")
    return Finding(f"NATS {url}", True, "reachable with TLS")


def credentials(accepted: bool, error: str = "", expires_in_s: float | None = None) -> Finding:
    if not accepted:
        revoked = "authorization violation" in error.lower() or "revoked" in error.lower()
        return Finding("NATS credentials", False, f"refused by the server: {error}",
                       "the server no longer accepts these credentials: your platform revoked or replaced them "
                       "(an account paused or closed, or new credentials issued), or they are for another server. "
                       "Ask your platform for a new bundle, unpack it with `mt5fleet agent init BUNDLE --force` "
                       "and run the doctor again" if revoked
                       else "check nats.creds_file points at the user.creds your platform issued")
    if expires_in_s is not None and expires_in_s < 7 * 86_400:
        return Finding("NATS credentials", False, f"valid, but they expire in {expires_in_s / 86_400:.1f} days",
                       "ask your platform for new credentials")
    return Finding("NATS credentials", True, "valid and accepted by the server (not revoked)")


def clock(skew_s: float | None) -> Finding:
    if skew_s is None:
        return Finding("Clock", True, "not measured: no fresh tick from the broker (market closed?); "
                       "the agent measures and corrects it while running")
    direction = "ahead of" if skew_s > 0 else "behind"
    if abs(skew_s) > CLOCK_TOLERANCE_S:
        return Finding("Clock", False, f"this computer's clock is {abs(skew_s):.1f} s {direction} the broker's",
                       "turn on Windows time synchronisation (Settings > Time & language > Sync now)")
    return Finding("Clock", True, f"within {abs(skew_s):.1f} s of the broker's")


def outbox(writable: bool, folder: str, error: str = "") -> Finding:
    if not writable:
        return Finding("Outbox", False, f"{folder} is not writable: {error}",
                       "set data_dir to a folder this Windows user may write, with free space")
    return Finding("Outbox", True, f"{folder} is writable")


def skew_against_server_time(host_ms: int, tick_ms: int) -> float:
    """Host minus broker, in seconds, from a fresh tick stamped in the trade server's time:
    the server runs whole (or half) hours off UTC, so only the remainder is skew."""
    half_hour = 1_800_000
    remainder = (host_ms - tick_ms) % half_hour
    if remainder > half_hour / 2:
        remainder -= half_hour
    return remainder / 1000

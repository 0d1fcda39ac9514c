"""The field rules of the edge, shared by every message check in ``validation``.

A :class:`Checks` collects violations instead of raising at the first one, so a sender
learns everything that is wrong with a message in one round trip. Each rule names the
field, says why in plain words and shows the bad value. No protobuf here: rules see
plain Python values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import TypeVar

from mt5fleet.proto.domain.violations import Violation
from mt5fleet.proto.subjects import InvalidName, check_symbol, check_user_id

E = TypeVar("E", bound=IntEnum)
M = TypeVar("M")  # a protobuf entry of a batch
T = TypeVar("T")  # the domain value built from it

_DAY_MS = 86_400_000
# Timestamps below this (2001-09-09 in ms, 5138 AD in seconds) were almost certainly
# sent in seconds: say so, it is the commonest producer bug.
_LOOKS_LIKE_SECONDS = 1_000_000_000_000
# Ids travel as Nats-Msg-Id headers and MT5 order comments: printable ASCII, no spaces.
_ID_RE = re.compile(r"^[!-~]+$")
# ISO 4217: the account's deposit currency.
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# Symbol currencies are labelled freely by brokers (USDT, XAU, US30 for CFDs).
_ASSET_CODE_RE = re.compile(r"^[A-Z0-9]{2,8}$")
ACCOUNT_NUMBER_RE = re.compile(r"^[0-9]{1,20}$")
_SHOWN_CHARS = 40


@dataclass(frozen=True)
class Limits:
    """What the edge accepts. Defaults suit one agent per user; all are overridable."""

    max_payload_bytes: int = 1_048_576      # NATS' default max_payload
    max_quotes_per_batch: int = 1_000
    max_specs_per_list: int = 2_000
    max_correlations: int = 1_000
    max_sessions: int = 16
    max_future_skew_ms: int = 5_000         # clock skew tolerated between agent and server
    max_past_age_ms: int = 7 * _DAY_MS      # covers a weekend and a holiday
    max_lot: float = 1_000.0
    max_price: float = 1e7
    max_amount: float = 1e13                # money figures: balance, equity, margin
    max_id_len: int = 128
    max_text_len: int = 1_024

    def __post_init__(self) -> None:
        # A zero or negative limit would silently reject (or accept) everything.
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"Limits.{f.name} must be a positive number, got {value!r}")


DEFAULT_LIMITS = Limits()


class ValidationError(ValueError):
    """A message was refused; ``violations`` lists every reason, ``kind`` its type."""

    def __init__(self, kind: str, violations: Iterable[Violation]) -> None:
        self.kind = kind
        self.violations: tuple[Violation, ...] = tuple(violations)
        listed = "; ".join(str(v) for v in self.violations) or "no reason given"
        count = len(self.violations)
        super().__init__(f"invalid {kind} ({count} violation{'s' * (count != 1)}): {listed}")

    def __reduce__(self):  # keeps it picklable for process pools and queues
        return (type(self), (self.kind, self.violations))


def show(value: object) -> str:
    """A bad value as it appears in a reason: repr, shortened so a 1 MB string is not echoed."""
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"
    return repr(value)


def _name(field: str) -> str:
    """The last part of a field path: "prices[3].ask" -> "ask"."""
    return field.rsplit(".", 1)[-1]


class Checks:
    """Collects the violations of one message (or one part of it, under ``prefix``)."""

    def __init__(self, now_ms: int, limits: Limits, prefix: str = "") -> None:
        self.now_ms = now_ms
        self.limits = limits
        self.prefix = prefix
        self.violations: list[Violation] = []

    @property
    def ok(self) -> bool:
        return not self.violations

    def nested(self, path: str) -> Checks:
        """Checks of a sub-message, whose field paths start with ``path.``."""
        return Checks(self.now_ms, self.limits, f"{self.prefix}{path}.")

    def merge(self, other: Checks) -> None:
        self.violations.extend(other.violations)

    def add(self, field: str, reason: str) -> None:
        self.violations.append(Violation(self.prefix + field, reason))

    def raise_if_any(self, kind: str) -> None:
        if self.violations:
            raise ValidationError(kind, self.violations)

    # ------------------------------------------------------------------- numbers

    def finite(self, field: str, value: float) -> bool:
        if math.isfinite(value):
            return True
        self.add(field, f"{_name(field)} {value!r} is not a finite number")
        return False

    def price(self, field: str, value: float, *, optional: bool = False) -> bool:
        """A price in quote currency; with ``optional``, 0 means "none"."""
        if optional and value == 0:
            return True
        if not self.finite(field, value):
            return False
        if value <= 0:
            none = " (0 means none)" if optional else ""
            self.add(field, f"{_name(field)} {value!r} is not a positive price{none}")
        elif value > self.limits.max_price:
            self.add(field, f"{_name(field)} {value!r} exceeds the maximum price "
                            f"{self.limits.max_price!r}")
        else:
            return True
        return False

    def bid_ask(self, bid: float, ask: float, *, bid_field: str = "bid",
                ask_field: str = "ask") -> None:
        """Ask >= bid; only compared once both are valid prices (else already reported)."""
        if _valid(bid) and _valid(ask) and ask < bid:
            self.add(ask_field, f"{_name(ask_field)} {ask!r} is below "
                                f"{_name(bid_field)} {bid!r}")

    def lots(self, field: str, value: float, *, required: bool) -> bool:
        """A volume in lots: finite, not negative, > 0 if required, at most max_lot."""
        if not self.finite(field, value):
            return False
        if value < 0 or (required and value == 0):
            self.add(field, f"{_name(field)} {value!r} lots must be greater than 0")
        elif value > self.limits.max_lot:
            self.add(field, f"{_name(field)} {value!r} lots exceeds the maximum of "
                            f"{self.limits.max_lot!r} lots")
        else:
            return True
        return False

    def positive(self, field: str, value: float) -> bool:
        if not self.finite(field, value):
            return False
        if value <= 0:
            self.add(field, f"{_name(field)} {value!r} must be greater than 0")
            return False
        return True

    def non_negative(self, field: str, value: float) -> bool:
        if not self.finite(field, value):
            return False
        if value < 0:
            self.add(field, f"{_name(field)} {value!r} must not be negative")
            return False
        return True

    def in_range(self, field: str, value: float, low: float, high: float) -> bool:
        if not self.finite(field, value):
            return False
        if not low <= value <= high:
            self.add(field, f"{_name(field)} {value!r} is outside {low!r}..{high!r}")
            return False
        return True

    def amount(self, field: str, value: float, *, non_negative: bool = False) -> bool:
        """A money figure in the account currency."""
        if not self.finite(field, value):
            return False
        if non_negative and value < 0:
            self.add(field, f"{_name(field)} {value!r} must not be negative")
        elif abs(value) > self.limits.max_amount:
            self.add(field, f"{_name(field)} {value!r} exceeds the maximum amount "
                            f"{self.limits.max_amount!r}")
        else:
            return True
        return False

    # ---------------------------------------------------------------- timestamps

    def timestamp(self, field: str, value: int, *, optional: bool = False) -> bool:
        """Unix ms, not further in the future than the skew, not older than the max age."""
        name, limits = _name(field), self.limits
        if optional and value == 0:
            return True
        if value <= 0:
            self.add(field, f"{name} {value!r} is not a positive unix ms timestamp")
        elif value > self.now_ms + limits.max_future_skew_ms:
            self.add(field, f"{name} {value!r} is {value - self.now_ms} ms in the future "
                            f"(at most {limits.max_future_skew_ms} ms allowed)")
        elif value < self.now_ms - limits.max_past_age_ms:
            hint = " (seconds instead of milliseconds?)" if value < _LOOKS_LIKE_SECONDS else ""
            self.add(field, f"{name} {value!r} is {self.now_ms - value} ms old (at most "
                            f"{limits.max_past_age_ms} ms allowed){hint}")
        else:
            return True
        return False

    def expiry(self, field: str, value: int, created_field: str, created: int) -> bool:
        """An expiry lies after its creation time; it may be far in the future."""
        if value <= 0:
            self.add(field, f"{_name(field)} {value!r} is not a positive unix ms timestamp")
        elif created > 0 and value <= created:
            self.add(field, f"{_name(field)} {value!r} is not after "
                            f"{_name(created_field)} {created!r}")
        else:
            return True
        return False

    # ------------------------------------------------------------------- strings

    def ident(self, field: str, value: str, *, required: bool = True) -> bool:
        """An id: non-empty if required, bounded, printable ASCII without spaces."""
        if not value:
            if required:
                self.add(field, f"{_name(field)} is empty")
            return not required
        if len(value) > self.limits.max_id_len:
            self.add(field, f"{_name(field)} {show(value)} is longer than "
                            f"{self.limits.max_id_len} characters")
        elif not _ID_RE.match(value):
            self.add(field, f"{_name(field)} {show(value)} contains spaces, control or "
                            "non-ASCII characters")
        else:
            return True
        return False

    def text(self, field: str, value: str, *, required: bool = False) -> bool:
        """Free text (names, reasons): bounded, non-empty if required."""
        if required and not value.strip():
            self.add(field, f"{_name(field)} is empty")
        elif len(value) > self.limits.max_text_len:
            self.add(field, f"{_name(field)} is {len(value)} characters long "
                            f"(at most {self.limits.max_text_len})")
        else:
            return True
        return False

    def symbol(self, field: str, value: str, *, optional: bool = False) -> bool:
        """A canonical symbol (subjects.SYMBOL_RE); with ``optional``, "" means none."""
        if optional and not value:
            return True
        return self._name_rule(field, value, check_symbol)

    def user_id(self, field: str, value: str) -> bool:
        """A TradingClient user id: a DNS label (subjects.USER_ID_RE)."""
        return self._name_rule(field, value, check_user_id)

    def _name_rule(self, field: str, value: str, rule) -> bool:
        if len(value) > 64:  # no DNS label or symbol is this long; keep the reason short
            self.add(field, f"{_name(field)} {show(value)} is too long")
            return False
        if value.endswith("\n"):
            # The subjects patterns end in "$", which also matches before a final newline;
            # such a name would corrupt a NATS subject.
            self.add(field, f"{_name(field)} {show(value)} ends with a newline")
            return False
        try:
            rule(value)
        except InvalidName as exc:
            self.add(field, str(exc))
            return False
        return True

    def currency(self, field: str, value: str) -> bool:
        """An ISO 4217 code such as USD."""
        if _CURRENCY_RE.match(value):
            return True
        self.add(field, f"{_name(field)} {show(value)} is not a 3-letter currency code")
        return False

    def asset_code(self, field: str, value: str) -> bool:
        """A broker's currency label of a symbol (USD, USDT, XAU); may be empty."""
        if not value or _ASSET_CODE_RE.match(value):
            return True
        self.add(field, f"{_name(field)} {show(value)} is not a currency code")
        return False

    def account_number(self, field: str, value: str, *, required: bool = True) -> bool:
        """An MT5 login as a decimal string."""
        if not value and not required:
            return True
        if ACCOUNT_NUMBER_RE.match(value):
            return True
        self.add(field, f"{_name(field)} {show(value)} is not a decimal MT5 login")
        return False

    # --------------------------------------------------------------------- enums

    def enum(self, field: str, value: int, enum_type: type[E]) -> E | None:
        """The member for a wire enum value; protobuf3 keeps undefined ints, we do not."""
        try:
            return enum_type(value)
        except ValueError:
            known = ", ".join(m.name for m in enum_type)
            self.add(field, f"{_name(field)} {value!r} is not a defined "
                            f"{enum_type.__name__} ({known})")
            return None

    # -------------------------------------------------------------- stops (SL/TP)

    def stops(self, *, is_buy: bool, base: float, base_field: str, stop_loss: float,
              take_profit: float, sl_field: str = "stop_loss",
              tp_field: str = "take_profit") -> None:
        """SL and TP on the correct side of ``base`` (entry or current price).

        A buy loses when the price falls: SL below, TP above. A sell is the mirror.
        0 means "none"; invalid prices were reported by ``price`` already.
        """
        if not _valid(base):
            return
        side = ("below", "above") if is_buy else ("above", "below")
        direction = "buy" if is_buy else "sell"
        for field, value, must_be in ((sl_field, stop_loss, side[0]),
                                      (tp_field, take_profit, side[1])):
            if not _valid(value):
                continue
            wrong = value >= base if must_be == "below" else value <= base
            if wrong:
                self.add(field, f"{_name(field)} {value!r} must be {must_be} "
                                f"{_name(base_field)} {base!r} for a {direction}")


def _valid(price: float) -> bool:
    """A finite positive number: worth comparing with another price."""
    return math.isfinite(price) and price > 0


def none_if_zero(value: float) -> float | None:
    """Wire fields documented "0: none" become None in the domain."""
    return value if value != 0 else None




def check_entries(checks: Checks, entries: Iterable[M], *, path: str, what: str,
                  check: Callable[[Checks, M], None], build: Callable[[M], T],
                  key: Callable[[T], str], age: Callable[[T], int]) -> tuple[tuple[T, ...], tuple[Violation, ...]]:
    """Check each entry of a batch on its own: a bad entry only costs itself.

    Returns the good entries (one per ``key``, the newest: see ``keep_newest``) in message
    order, and every violation of the rest, in message order, under ``path[index]``.
    """
    good: list[tuple[int, T]] = []
    rejected: list[tuple[int, Violation]] = []
    for index, entry in enumerate(entries):
        entry_checks = checks.nested(f"{path}[{index}]")
        check(entry_checks, entry)
        if entry_checks.ok:
            good.append((index, build(entry)))
        else:
            rejected.extend((index, v) for v in entry_checks.violations)
    kept, duplicates = keep_newest(good, key=key, age=age, path=path, what=what)
    rejected.extend(duplicates)
    rejected.sort(key=lambda item: item[0])  # stable: an entry's violations stay in order
    return tuple(kept), tuple(v for _, v in rejected)


def keep_newest(items: Iterable[tuple[int, T]], *, key: Callable[[T], str],
                age: Callable[[T], int], path: str,
                what: str) -> tuple[list[T], list[tuple[int, Violation]]]:
    """One item per key: the newest wins, on a tie the later one (the sender wrote it last).

    ``items`` are (index in the message, item); returns the kept items in message order
    and, for every dropped one, (its index, a violation naming the one that replaced it).
    """
    newest: dict[str, tuple[int, T]] = {}
    dropped: list[tuple[int, Violation]] = []
    for index, item in items:
        previous = newest.get(key(item))
        if previous is None:
            newest[key(item)] = (index, item)
            continue
        if age(item) >= age(previous[1]):
            (lost, lost_item), (won, won_item) = previous, (index, item)
        else:
            (lost, lost_item), (won, won_item) = (index, item), previous
        newest[key(item)] = (won, won_item)
        why = "is newer" if age(won_item) != age(lost_item) else "is as new and comes later"
        dropped.append((lost, Violation(
            f"{path}[{lost}].symbol",
            f"duplicate {key(item)}: the {what} in {path}[{won}] {why}")))
    kept = [item for _, item in sorted(newest.values(), key=lambda pair: pair[0])]
    return kept, dropped

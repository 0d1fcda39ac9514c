"""The instruments the platform knows: the one table of canonical symbols, their
currencies, digits and names, and which symbols count as standard (not custom) pairs.

Brokers name symbols their own way (``EURUSD.m``, ``EURUSDi``); everything on the wire and
in this table uses the canonical name. The reference feed, the simulated brokers, the
market-data workers and the operator's tier rules all read this table. Account currencies
counted in a minor unit (cent accounts) are named here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str        # canonical name
    base: str          # base currency (or metal)
    quote: str         # quote (profit) currency
    digits: int        # price digits at the reference feed; brokers may quote more
    description: str

    @property
    def point(self) -> float:
        """The reference price increment, 10^-digits."""
        return 10.0 ** -self.digits


def _table(*instruments: Instrument) -> Mapping[str, Instrument]:
    return MappingProxyType({i.symbol: i for i in instruments})


# The symbols the reference feed prices (and so the demo and the market-data workers).
INSTRUMENTS: Mapping[str, Instrument] = _table(
    Instrument("EURUSD", "EUR", "USD", 5, "Euro vs US Dollar"),
    Instrument("GBPUSD", "GBP", "USD", 5, "Great Britain Pound vs US Dollar"),
    Instrument("USDJPY", "USD", "JPY", 3, "US Dollar vs Japanese Yen"),
    Instrument("USDCHF", "USD", "CHF", 5, "US Dollar vs Swiss Franc"),
    Instrument("AUDUSD", "AUD", "USD", 5, "Australian Dollar vs US Dollar"),
    Instrument("USDCAD", "USD", "CAD", 5, "US Dollar vs Canadian Dollar"),
    Instrument("NZDUSD", "NZD", "USD", 5, "New Zealand Dollar vs US Dollar"),
    Instrument("EURGBP", "EUR", "GBP", 5, "Euro vs Great Britain Pound"),
    Instrument("EURJPY", "EUR", "JPY", 3, "Euro vs Japanese Yen"),
    Instrument("GBPJPY", "GBP", "JPY", 3, "Great Britain Pound vs Japanese Yen"),
    Instrument("XAUUSD", "XAU", "USD", 2, "Gold vs US Dollar"),
)

# The symbols every tier may use; anything else is a "custom pair" (enterprise only by
# default). The 28 pairs of the eight major currencies, and gold and silver.
MAJOR_CURRENCIES = ("EUR", "GBP", "AUD", "NZD", "USD", "CAD", "CHF", "JPY")
STANDARD_SYMBOLS: frozenset[str] = frozenset(
    {a + b for i, a in enumerate(MAJOR_CURRENCIES) for b in MAJOR_CURRENCIES[i + 1:]} | {"XAUUSD", "XAGUSD"})


# Account currencies counted in a minor unit: a cent account's money is in US (euro) cents,
# so its 100,000 is 1,000 dollars. Brokers name them USC and EUC (some "USc").
MINOR_UNITS: Mapping[str, tuple[str, float]] = MappingProxyType({"USC": ("USD", 100.0), "EUC": ("EUR", 100.0)})


def major_currency(code: str) -> tuple[str, float]:
    """The currency ``code`` counts in and how many ``code`` units make one of it:
    ("USD", 100.0) for a cent account's "USC", (code, 1.0) for every other currency."""
    return MINOR_UNITS.get(code.upper(), (code, 1.0))

"""Is the MT5 account the agent's terminal is logged into the one its TradingClient declares?

One definition for both sides of issue 17's check: the operator compares the agent's last
AccountProfile with the TradingClient (``AgentConnected=False``, reason ``BrokerMismatch``,
and the user's config made close-only), and the agent compares its terminal's
``account_info()`` with the ClientConfig's ``broker_name``/``broker_server`` before every
opening command (refused ``broker_mismatch``). Pure: the caller passes both sides.

The trade server decides: it names one broker's one MT5 server exactly, whereas
``ACCOUNT_COMPANY`` is the legal entity (IC Markets' accounts report "Raw Trading Ltd"),
which a TradingClient's broker name, usually the brand, rarely spells the same. Names are
compared without case and surrounding or repeated spaces, as the terminal shows them.
"""

from __future__ import annotations


def normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def account_mismatch(declared_company: str, declared_server: str, reported_company: str,
                     reported_server: str) -> str | None:
    """Why the reported account is not the declared one, naming both brokers, or None.

    Nothing declared (an agent on its local file, no server config) or nothing reported
    yet (no account reading) is no mismatch: there is nothing to compare."""
    if not declared_server or not reported_server or normalised(reported_server) == normalised(declared_server):
        return None
    reported = f"{reported_company!r} on server {reported_server!r}" if reported_company \
        else f"server {reported_server!r}"
    return (f"the agent's MT5 account is with {reported}, but the TradingClient declares "
            f"{declared_company!r} on server {declared_server!r}")

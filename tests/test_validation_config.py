"""ClientConfig at the edge: read once per change into a typed value, refused whole when any
field is wrong, and written back by the one encoder the operator uses."""

from __future__ import annotations

import pytest

from mt5fleet.proto.domain.config import (
    ClientConfig,
    Preferences,
    RiskProfile,
    SealedCredentials,
    SizingMode,
    TierLimits,
)
from mt5fleet.proto.domain.trading import AccountType, SubscriptionTier
from mt5fleet.proto.v1 import config_pb2
from mt5fleet.proto.validation import ValidationError, check_client_config, decode
from mt5fleet.proto.validation_config import client_config_message

NOW = 1_718_193_600_000

FULL = ClientConfig(
    user_id="alice", tier_name="pro", tier=SubscriptionTier.PRO,
    trading_symbols=("EURUSD", "GBPUSD"), correlation_symbols=("USDCHF",), monitoring_symbols=("XAUUSD",),
    symbol_map=(("EURUSD", "EURUSD.m"), ("GBPUSD", "GBPUSD.m")),
    limits=TierLimits(max_trading_pairs=5, max_monitoring_pairs=10, correlation_analysis=True,
                      max_payload_bytes=65_536, max_subscriptions=100, max_data_bytes=-1, max_price_batches_per_s=5),
    risk=RiskProfile(max_risk_per_trade_pct=1.5, max_daily_loss=500.0, max_drawdown=0.2, allow_news_trading=True,
                     allowed_symbols=("EURUSD",), max_spread_points=30, max_lot=2.0, max_deviation_points=15),
    preferences=Preferences(preferred_lot_size=0.1, max_open_positions=4, auto_close_friday=True,
                            conservative_mode=True, sizing_mode=SizingMode.EQUITY_MULTIPLIER, sizing_value=0.05),
    paused=True, close_only=True, max_quote_age_ms=1_500, max_signal_age_ms=30_000,
    credentials=SealedCredentials(login=51234567, server="Broker-Live", nonce=b"n" * 12, ciphertext=b"c" * 24,
                                  key_id="k1"),
    worker_shard=3, generation=7, updated_at_ms=NOW, broker_name="Broker", broker_server="Broker-Live",
    account_type=AccountType.LIVE,
)


def wire(config: ClientConfig) -> bytes:
    return client_config_message(config).SerializeToString()


def read(raw: bytes, key: str | None = "alice") -> ClientConfig:
    return check_client_config(decode(config_pb2.ClientConfig, raw), NOW, key=key)


def test_every_field_survives_the_wire_both_ways():
    assert read(wire(FULL)) == FULL
    assert read(wire(ClientConfig(user_id="alice"))) == ClientConfig(user_id="alice")


def test_the_typed_value_is_frozen_and_hides_the_sealed_password_in_its_repr():
    with pytest.raises(AttributeError):
        FULL.paused = False  # type: ignore[misc]
    assert "cccc" not in repr(FULL) and "51234567" in repr(FULL)
    assert FULL.evolve(paused=False).paused is False and FULL.paused is True


def test_a_config_under_another_users_key_is_refused():
    with pytest.raises(ValidationError, match="user_id 'alice' is stored under the key of 'bob'"):
        read(wire(FULL), key="bob")


def test_every_bad_field_is_named_in_one_error():
    msg = client_config_message(FULL)
    msg.trading_symbols.append("eur/usd")
    msg.risk.max_risk_per_trade = 150.0
    msg.risk.max_drawdown = float("nan")
    msg.preferences.sizing_mode = 9
    msg.worker_shard = 99
    msg.max_quote_age_ms = -1
    with pytest.raises(ValidationError) as refused:
        read(msg.SerializeToString())
    fields = {v.field for v in refused.value.violations}
    assert fields == {"trading_symbols[2]", "risk.max_risk_per_trade", "risk.max_drawdown",
                      "preferences.sizing_mode", "worker_shard", "max_quote_age_ms"}


def test_a_tier_from_a_newer_operator_is_read_as_unspecified_not_refused():
    msg = client_config_message(FULL)
    msg.tier = 42
    assert read(msg.SerializeToString()).tier is SubscriptionTier.UNSPECIFIED


def test_an_entry_written_long_ago_or_on_a_clock_ahead_is_still_read():
    # updated_at is a record of the operator's write, not a freshness claim.
    for written in (NOW - 400 * 86_400_000, NOW + 3_600_000):
        assert read(wire(FULL.evolve(updated_at_ms=written))).updated_at_ms == written


def test_sealed_credentials_without_ciphertext_are_refused():
    msg = client_config_message(FULL)
    msg.mt5_credentials.ciphertext = b""
    with pytest.raises(ValidationError, match="mt5_credentials.ciphertext"):
        read(msg.SerializeToString())

"""The wire contract: committed generated code matches the .proto sources, the seed
documents' messages keep every name, number and type, and every field says its unit."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from google.protobuf import descriptor, descriptor_pool

from mt5fleet.proto import codegen
from mt5fleet.proto.v1 import (  # noqa: F401  (registers every file in the default pool)
    account_pb2,
    commands_pb2,
    common_pb2,
    config_pb2,
    execution_pb2,
    heartbeat_pb2,
    market_data_pb2,
    prices_pb2,
    signals_pb2,
    symbols_pb2,
)

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
POOL = descriptor_pool.Default()
FD = descriptor.FieldDescriptor
SCALARS = {
    FD.TYPE_DOUBLE: "double", FD.TYPE_FLOAT: "float", FD.TYPE_INT64: "int64",
    FD.TYPE_UINT64: "uint64", FD.TYPE_INT32: "int32", FD.TYPE_UINT32: "uint32",
    FD.TYPE_BOOL: "bool", FD.TYPE_STRING: "string", FD.TYPE_BYTES: "bytes",
}


# ------------------------------------------------------------------ generated code drift

def test_committed_generated_code_matches_the_proto_sources(tmp_path):
    fresh = codegen.generate(tmp_path)
    committed_dir = codegen.OUTPUT_DIR
    fresh_names = {p.name for p in fresh}
    committed_names = {p.name for p in committed_dir.glob("*_pb2.py*")}
    assert fresh_names == committed_names, "run: python -m mt5fleet.proto.codegen"
    for path in fresh:
        assert path.read_bytes() == (committed_dir / path.name).read_bytes(), (
            f"{path.name} drifted from its .proto; run: python -m mt5fleet.proto.codegen"
        )


# ------------------------------------------------------------------ seed compatibility

_BLOCK = re.compile(r"```protobuf\n(.*?)```", re.DOTALL)
_DEF = re.compile(r"^(message|enum)\s+(\w+)\s*\{(.*?)^\}", re.DOTALL | re.MULTILINE)
_FIELD = re.compile(r"^\s*(repeated\s+)?(map<\s*\w+\s*,\s*\w+\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;", re.MULTILINE)
_ENUM_VALUE = re.compile(r"^\s*(\w+)\s*=\s*(\d+)\s*;", re.MULTILINE)


def seed_definitions() -> dict[str, tuple[str, dict]]:
    """{name: ("message", {field: (label, type, number)}) | ("enum", {value: number})}."""
    if not SEEDS.is_dir():
        pytest.fail(f"seed documents not found at {SEEDS}: the contract test needs ../shared/seeds")
    found: dict[str, tuple[str, dict]] = {}
    for doc in sorted(SEEDS.glob("*.md")):
        for block in _BLOCK.findall(doc.read_text()):
            for kind, name, body in _DEF.findall(block):
                if kind == "message":
                    table = {f: ("repeated" if rep else "", re.sub(r"\s", "", t), int(n))
                             for rep, t, f, n in _FIELD.findall(body)}
                else:
                    table = {v: int(n) for v, n in _ENUM_VALUE.findall(body)}
                if name in found:
                    assert found[name] == (kind, table), f"the seeds disagree about {name}"
                found[name] = (kind, table)
    return found


SEED = seed_definitions()


def test_the_seeds_define_the_messages_the_spec_names():
    assert {"AccountProfile", "RiskProfile", "TradingPreferences", "ClientPriceStream", "ClientPrice",
            "TradingCommand", "CommandType", "OrderType", "MarketDataStream", "TickData",
            "UserContext", "BaseMessage", "ClientMarketData", "TechnicalIndicators"} <= set(SEED)


def _type_name(field: descriptor.FieldDescriptor) -> str:
    if field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return f"map<{_type_name(key)},{_type_name(value)}>"
    if field.type == FD.TYPE_MESSAGE:
        return field.message_type.name
    if field.type == FD.TYPE_ENUM:
        return field.enum_type.name
    return SCALARS[field.type]


def _label(field: descriptor.FieldDescriptor) -> str:
    repeated = field.is_repeated and not (
        field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry)
    return "repeated" if repeated else ""


@pytest.mark.parametrize("name", sorted(n for n, (k, _) in SEED.items() if k == "message"))
def test_seed_message_keeps_names_numbers_and_types(name):
    message = POOL.FindMessageTypeByName(f"mt5fleet.v1.{name}")
    for field_name, (label, type_name, number) in SEED[name][1].items():
        field = message.fields_by_name.get(field_name)
        assert field is not None, f"{name}.{field_name} is missing"
        assert field.number == number, f"{name}.{field_name} renumbered {number} -> {field.number}"
        assert _type_name(field) == type_name.split(".")[-1], f"{name}.{field_name} changed type"
        assert _label(field) == label, f"{name}.{field_name} changed label"
    seed_numbers = {n for _, _, n in SEED[name][1].values()}
    for field in message.fields:
        if field.name not in SEED[name][1]:
            assert field.number not in seed_numbers, f"{name}.{field.name} reuses a seed number"


@pytest.mark.parametrize("name", sorted(n for n, (k, _) in SEED.items() if k == "enum"))
def test_seed_enum_keeps_value_names_and_numbers(name):
    enum = POOL.FindEnumTypeByName(f"mt5fleet.v1.{name}")
    assert {v.name: v.number for v in enum.values} == SEED[name][1]


def test_seed_bytes_decode_with_the_seed_numbers():
    """Bytes an existing MQL5 client writes (hand-encoded with the seed numbers) decode here."""
    # TradingCommand: 1 command_id="c1", 3 type=CLOSE_ALL(3), 6 lot_size=0.5, 13 original_entry=1.1
    wire = (b"\x0a\x02c1" + b"\x18\x03" + b"\x31" + struct.pack("<d", 0.5)
            + b"\x69" + struct.pack("<d", 1.1))
    command = commands_pb2.TradingCommand.FromString(wire)
    assert (command.command_id, command.type, command.lot_size, command.original_entry) == (
        "c1", commands_pb2.CLOSE_ALL, 0.5, 1.1)


def test_named_but_undefined_seed_types_are_defined():
    for name in ("OHLCVBar", "MarketDepth", "SubscriptionRequest", "MarketSession"):
        POOL.FindMessageTypeByName(f"mt5fleet.v1.{name}")
    for name in ("SubscriptionTier", "AccountType"):
        POOL.FindEnumTypeByName(f"mt5fleet.v1.{name}")


# ------------------------------------------------------------------ SPEC §2.1 additions

@pytest.mark.parametrize("message, fields", [
    ("UniversalSignal", {"signal_id", "symbol", "order_type", "reference_bid", "reference_ask", "entry",
                         "stop_loss", "take_profit", "confidence", "created_at", "expires_at", "strategy"}),
    ("ExecutionReport", {"command_id", "user_id", "status", "retcode", "ticket", "fill_price",
                         "filled_volume", "slippage_points", "received_at", "executed_at", "reason"}),
    ("SymbolSpec", {"symbol", "digits", "point", "contract_size", "tick_value", "volume_min", "volume_max",
                    "volume_step", "stops_level", "filling_modes", "trade_mode"}),
    ("Heartbeat", {"agent_version", "terminal_connected", "trade_allowed", "outbox_depth",
                   "last_publish_latency_ms", "last_command_latency_ms"}),
    ("ClientConfig", {"trading_symbols", "tier", "limits", "risk", "mt5_credentials"}),
])
def test_spec_messages_carry_their_fields(message, fields):
    assert fields <= set(POOL.FindMessageTypeByName(f"mt5fleet.v1.{message}").fields_by_name)


def test_execution_status_values():
    names = {v.name for v in POOL.FindEnumTypeByName("mt5fleet.v1.ExecutionStatus").values}
    for status in ("FILLED", "PARTIAL", "REJECTED", "EXPIRED", "DUPLICATE", "FAILED"):
        assert f"EXECUTION_STATUS_{status}" in names


def test_trading_command_additions_start_at_16_and_carry_what_execution_needs():
    message = POOL.FindMessageTypeByName("mt5fleet.v1.TradingCommand")
    added = {f.name: f.number for f in message.fields if f.name not in SEED["TradingCommand"][1]}
    assert min(added.values()) >= 16
    assert {"position_ticket", "target_command_id", "max_deviation_points", "created_at", "signal_id"} <= set(added)


# ------------------------------------------------------------------ documentation

_FIELD_LINE = re.compile(r"^\s*(repeated\s+)?[\w.<>, ]+\s+\w+\s*=\s*\d+\s*;(.*)$")


@pytest.mark.parametrize("source", codegen.proto_sources(), ids=lambda p: p.name)
def test_every_field_and_enum_value_has_a_comment(source):
    lines = source.read_text().splitlines()
    bare = [
        f"{source.name}:{i + 1}: {line.strip()}"
        for i, line in enumerate(lines)
        if _FIELD_LINE.match(line) and "//" not in line and not lines[i - 1].strip().startswith("//")
        and not re.match(r"^\s*\w+_UNSPECIFIED = 0;", line)
    ]
    assert not bare, "fields without a comment (unit and meaning):\n" + "\n".join(bare)

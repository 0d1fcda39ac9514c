"""The status page's recent commands, rendered on the agent (no browser): "lot and why"
carries the server's sizing reason from the wire to the row, says so when an older worker
sent none, and escapes it like every other text from the wire."""

from __future__ import annotations

import factories as f
import pytest
from factories import NOW_MS

from mt5fleet.client.adapters.status import AgentStatus, CommandRow
from mt5fleet.client.adapters.status_page import commands
from mt5fleet.client.app.outcomes import CommandFacts, Handled
from mt5fleet.client.app.status_view import _command_row
from mt5fleet.proto.v1 import commands_pb2
from mt5fleet.proto.validation import Limits, ValidationError, check_command

SIZING = "risk 1.0% of equity 10,000.00 USD over 20.0 pips SL -> 0.50 lots"


def _status(*rows: CommandRow) -> AgentStatus:
    return AgentStatus(user_id="alice", version="t", nats_connected=True, nats_server="", terminal_connected=True,
                       broker="", currency="USD", balance=0.0, equity=0.0, margin_free=0.0, outbox_depth=0,
                       reconnects=0, tier="pro", trading_symbols=("EURUSD",), commands=rows)


def _row_of(wire: commands_pb2.TradingCommand, lot_why: str = "") -> CommandRow:
    """The path a command takes to the page: validated at the edge, its facts kept beside
    its outcome, turned into a row."""
    facts = CommandFacts.of(check_command(wire, NOW_MS), lot_why)
    handled = Handled(wire.command_id, commands_pb2.CommandType.Name(wire.type), wire.symbol, "FILLED", "",
                      1.08514, 2.0, NOW_MS, order_type="BUY", filled_volume=wire.lot_size, facts=facts)
    return _command_row(handled)


def _lot_cell(html: str) -> str:
    start = html.index('<td data-field="lot">')
    return html[start:html.index("</td>", start)]


def test_the_sizing_reason_travels_from_the_wire_to_the_lot_cell():
    row = _row_of(f.command(sizing_reason=SIZING), lot_why="risks 0.5% of equity, at most 2.0%")
    assert row.sizing_reason == SIZING
    cell = _lot_cell(commands(_status(row)))
    assert f'<small data-field="sizing-reason">{SIZING.replace(">", "&gt;")}</small>' in cell
    assert "agent check: risks 0.5% of equity, at most 2.0%" in cell
    assert cell.index("sizing-reason") < cell.index("lot-check")  # the server's reason first


def test_an_open_without_a_sizing_reason_says_the_server_did_not_say_why():
    cell = _lot_cell(commands(_status(_row_of(f.command()))))
    assert cell.startswith('<td data-field="lot">0.1')
    assert "the server did not say why" in cell and "lot-check" not in cell


def test_a_close_without_a_sizing_reason_shows_no_fallback():
    close = f.command(type=commands_pb2.CLOSE_POSITION, lot_size=0.05, position_ticket=880001)
    cell = _lot_cell(commands(_status(_row_of(close))))
    assert cell == '<td data-field="lot">0.05'


def test_the_sizing_reason_is_escaped():
    cell = _lot_cell(commands(_status(_row_of(f.command(sizing_reason="<script>x</script>")))))
    assert "<script>" not in cell and "&lt;script&gt;x&lt;/script&gt;" in cell


def test_an_oversized_sizing_reason_is_refused_at_the_edge():
    with pytest.raises(ValidationError, match="sizing_reason"):
        check_command(f.command(sizing_reason="x" * 2_000), NOW_MS, Limits())

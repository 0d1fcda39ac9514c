"""The calendar's whole path to the agent (issue 17), with nothing stood in for: the platform's
calendar service reads a weekly export through its file adapter and puts it into the KV bucket
``calendar``; a real agent (simulated terminal) on a tenant account the operator's own issuing
path made, on a TLS nats-server in JWT operator mode, receives it through that account's
imports only, and refuses an opening command inside the news window while accepting one
outside it and a close inside it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import WEDNESDAY_MORNING, AgentHarness, open_positions
from intruder_kit import Fleet, issue_agent, service_creds, start_fleet, system_creds
from waiting import wait_for

from mt5fleet.client.app.agent import Agent
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.calendar import MINUTE_MS, NewsWindow
from mt5fleet.proto.runtime import natsconn
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats
from mt5fleet.proto.v1 import commands_pb2, config_pb2, execution_pb2
from mt5fleet.workers.adapters.calendar_source import FileCalendarSource
from mt5fleet.workers.app.calendar_service import CalendarService

USER = "dave"   # a tenant of its own: none of the intruder kit's seeded data is its
NEW_YORK = dt.timezone(dt.timedelta(hours=-5))   # EST: the export's offsets, as the sites publish them
REJECTED, FILLED = execution_pb2.EXECUTION_STATUS_REJECTED, execution_pb2.EXECUTION_STATUS_FILLED


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[tuple[EmbeddedNats, Fleet]]:
    server, fleet = start_fleet(tmp_path_factory.mktemp("news-path"))
    try:
        yield server, fleet
    finally:
        server.close()


def weekly_export(path: Path, event_ms: int) -> None:
    """The retail calendar sites' weekly JSON: one high-impact USD event, and a low-impact one
    the service drops."""
    def at(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).astimezone(NEW_YORK).isoformat(timespec="seconds")
    path.write_text(json.dumps([
        {"title": "Non-Farm Employment Change", "country": "USD", "date": at(event_ms), "impact": "High",
         "forecast": "160K", "previous": "143K"},
        {"title": "German Factory Orders m/m", "country": "EUR", "date": at(event_ms), "impact": "Low",
         "forecast": "", "previous": ""},
    ]))


async def test_the_platforms_calendar_reaches_the_agent_through_its_imports_and_it_refuses_inside_the_window(
        fleet, tmp_path):
    server, kit = fleet
    system = await natsconn.connect(kit.settings("system", system_creds(kit)))
    service = await natsconn.connect(kit.settings("service", service_creds(kit)))
    creds = await issue_agent(kit, system, USER, ["EURUSD"])
    harness = AgentHarness(server, tmp_path, user_id=USER, start=WEDNESDAY_MORNING,
                           nats={"creds_file": str(creds), "tls_ca": str(kit.ca)},
                           symbols={"trading": ["EURUSD"], "monitoring": []})
    harness.nc, harness.js = service, service.jetstream()
    export = tmp_path / "ff_calendar_thisweek.json"
    weekly_export(export, harness.now_ms() + 60 * MINUTE_MS)   # the window opens 45 min from now
    calendar = CalendarService(service, FileCalendarSource(export), now_ms=harness.now_ms,
                               window=NewsWindow(15 * MINUTE_MS, 15 * MINUTE_MS))
    try:
        # The operator's config says news trading is off for this user.
        config = config_pb2.ClientConfig(user_id=USER, tier_name="free", trading_symbols=["EURUSD"])
        config.risk.max_risk_per_trade = 1.0
        config.risk.allow_news_trading = False
        await (await harness.js.key_value(subjects.CONFIG_BUCKET)).put(USER, config.SerializeToString())
        published = await calendar.refresh_once()
        assert published is not None and [e.title for e in published.events] == ["Non-Farm Employment Change"]

        await service.subscribe(subjects.user_subject(USER, subjects.Channel.EXECUTIONS), cb=harness._on_report)
        await harness.start_catchup_service()
        harness.agent = agent = Agent(harness.settings, harness.sim, clock=harness.clock)
        await agent.start()
        await wait_for(lambda: "EURUSD" in agent.executor.symbol_map, "the agent connected and mapped EURUSD")
        await wait_for(lambda: agent.effective.from_server and not agent.effective.limits.allow_news_trading,
                       "the config (news trading off) reached the agent")
        await wait_for(lambda: len(agent.news.current.events) == 1, "the calendar read through the account's imports")
        assert agent.news.current.events == published.events and agent.news.current.window == published.window

        # Outside the window (45 min before it opens): the opening is executed.
        early = harness.command()
        await harness.send(early)
        assert (await harness.report(early.command_id)).status == FILLED
        [position] = open_positions(harness.sim)

        # The platform's next refresh moves the event 10 minutes ahead; the agent follows it live.
        soon = harness.now_ms() + 10 * MINUTE_MS
        weekly_export(export, soon)
        await calendar.refresh_once()
        await wait_for(lambda: agent.news.current.events and agent.news.current.events[0].at_ms == soon // 1000 * 1000,
                       "the refreshed calendar reached the agent")
        before = agent.metrics.rejected.labels("news_window")._value.get()
        inside = harness.command()
        await harness.send(inside)
        report = await harness.report(inside.command_id)
        assert (report.status, report.reject_code) == (REJECTED, "news_window")
        assert "Non-Farm Employment Change" in report.reason and "EURUSD" in report.reason
        assert open_positions(harness.sim) == (position,)              # nothing opened
        assert agent.metrics.rejected.labels("news_window")._value.get() == before + 1
        # A close inside the window: open positions stay the trader's to close.
        close = harness.command(type=commands_pb2.CLOSE_POSITION, position_ticket=position.ticket,
                                lot_size=position.volume, entry_price=0, stop_loss=0, take_profit=0)
        await harness.send(close)
        assert (await harness.report(close.command_id)).status == FILLED
        assert not open_positions(harness.sim)
    finally:
        if harness.agent is not None:
            await harness.agent.stop()
        if harness.catchup is not None:
            await harness.catchup.stop()
        await service.close()
        await system.close()

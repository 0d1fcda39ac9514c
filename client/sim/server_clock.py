"""The trade server's clock: what every time the simulated terminal reports is measured in.

A real MetaTrader 5 terminal reports tick, bar, order, deal and position times, and takes
the dates of its history and expiration arguments, in its broker's trade-server time,
stamped as if it were UTC. Most retail brokers run GMT+2 in winter and GMT+3 in summer,
switching with US daylight saving at the New York 17:00 rollover (the "New York close"
convention: the FX week opens Monday 00:00 server time and a daily bar spans one New York
trading day); some run on UTC. The simulation keeps UTC inside and converts at the API's
edge only: records out to server time, date arguments in from server time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from mt5fleet.client.sim.records import SymbolInfo, Tick, TradeDeal, TradeOrder, TradePosition
from mt5fleet.proto.domain.sessions import DAY_BOUNDARY, NEW_YORK

_HOUR_MS = 3_600_000


@functools.lru_cache(maxsize=512)
def _us_summer_hour(hour: int) -> bool:
    """US daylight saving as a New York close server applies it, for the UTC hour ``hour``:
    from the 17:00 rollover of the switch day, not 02:00, so the offset never changes inside
    a trading day. The rollover is on a whole UTC hour, so an hour's answer holds for all of it."""
    local = datetime.fromtimestamp(hour * 3600, NEW_YORK)
    day = local.date() if local.time() >= DAY_BOUNDARY else local.date() - timedelta(days=1)
    return bool(datetime.combine(day, DAY_BOUNDARY, NEW_YORK).dst())


@dataclass(frozen=True)
class ServerZone:
    """A trade server's clock: UTC plus a standard offset, plus an hour in US summer if it follows US DST."""

    name: str
    standard_offset_s: int
    us_daylight_saving: bool = False

    def offset_s(self, utc_ms: int) -> int:
        summer = self.us_daylight_saving and _us_summer_hour(utc_ms // _HOUR_MS)
        return self.standard_offset_s + (3600 if summer else 0)

    def to_server_ms(self, utc_ms: int) -> int:
        return utc_ms + self.offset_s(utc_ms) * 1000

    def to_utc_ms(self, server_ms: int) -> int:
        # Reading the offset at (server - standard offset) is exact outside the hour the
        # switch skips or repeats, and that hour lies in the closed weekend.
        return server_ms - self.offset_s(server_ms - self.standard_offset_s * 1000) * 1000

    def to_utc_s(self, server_s: int) -> int:
        return self.to_utc_ms(server_s * 1000) // 1000

    def to_server_s(self, utc_s: int) -> int:
        return self.to_server_ms(utc_s * 1000) // 1000


UTC = ServerZone("UTC", 0)
NEW_YORK_CLOSE = ServerZone("GMT+2/+3 (New York close)", 7200, us_daylight_saving=True)


def quote(zone: ServerZone, q: Any) -> Any:
    """A market ``Quote`` (a dataclass with ``time_msc``) stamped in server time."""
    return replace(q, time_msc=zone.to_server_ms(q.time_msc))


def tick(zone: ServerZone, t: Tick) -> Tick:
    ms = zone.to_server_ms(t.time_msc)
    return t._replace(time=ms // 1000, time_msc=ms)


def symbol_info(zone: ServerZone, info: SymbolInfo) -> SymbolInfo:
    return info._replace(time=zone.to_server_s(info.time))


def position(zone: ServerZone, p: TradePosition) -> TradePosition:
    opened, updated = zone.to_server_ms(p.time_msc), zone.to_server_ms(p.time_update_msc)
    return p._replace(time=opened // 1000, time_msc=opened, time_update=updated // 1000, time_update_msc=updated)


def order(zone: ServerZone, o: TradeOrder) -> TradeOrder:
    """time_expiration stays as requested: the request gave it in server time already."""
    setup = zone.to_server_ms(o.time_setup_msc)
    done = zone.to_server_ms(o.time_done_msc) if o.time_done_msc else 0
    return o._replace(time_setup=setup // 1000, time_setup_msc=setup, time_done=done // 1000, time_done_msc=done)


def deal(zone: ServerZone, d: TradeDeal) -> TradeDeal:
    ms = zone.to_server_ms(d.time_msc)
    return d._replace(time=ms // 1000, time_msc=ms)

"""The economic calendar (issue 17): high-impact events and the news windows around them.

Pure: text in, typed values out; nothing here reads a clock, a file or NATS. Three source
formats, each read into the same ``CalendarEvent`` (time in UTC ms, currency, impact, title):

* the weekly calendar export retail FX sites publish as JSON (``ff_calendar_thisweek.json``:
  a list of ``{"title", "country", "date", "impact", "forecast", "previous"}``, ``country``
  being the currency code and ``date`` ISO 8601 with the publisher's UTC offset, e.g.
  ``2026-12-04T08:30:00-05:00``);
* the same export as XML (``ff_calendar_thisweek.xml``: ``<weeklyevents><event>`` with
  ``title``, ``country``, ``date`` ``MM-DD-YYYY``, ``time`` ``8:30am`` and ``impact``), whose
  times are GMT; ``All Day``/``Tentative``/empty times name no instant;
* iCalendar (RFC 5545) ``VEVENT``s: ``DTSTART`` in UTC (``...Z``) or with a ``TZID`` the
  IANA database knows, the currency from ``CATEGORIES`` or a ``USD:``/``[USD]`` prefix of
  ``SUMMARY``, the impact from ``CATEGORIES`` (High/Medium/Low) or ``PRIORITY`` (1-4 high,
  5 medium, 6-9 low, RFC 5545 §3.8.1.9).

A bad entry is refused with a reason naming it and counted; the entries around it are kept.
An entry without an instant (all day, tentative) is not an error: it is counted as untimed.

In JetStream the calendar is one KV value (``subjects.CALENDAR_BUCKET``), this module's
JSON form, written by the calendar worker and read by every adjustment worker and agent.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import re
import xml.etree.ElementTree as ET  # noqa: S405  (DOCTYPE refused before parsing: see _xml_root)
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mt5fleet.proto.domain.instruments import INSTRUMENTS

FORMAT_VERSION = 1
MINUTE_MS = 60_000
DEFAULT_BEFORE_MS = 15 * MINUTE_MS
DEFAULT_AFTER_MS = 15 * MINUTE_MS
MAX_EVENTS = 5_000          # a week of every country's releases is well under 1,000
MAX_TITLE = 200
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# A sane instant: 2000-01-01 .. 2100-01-01 (a 1970 or a year-9999 event is a broken feed).
MIN_MS, MAX_MS = 946_684_800_000, 4_102_444_800_000


class CalendarError(ValueError):
    """A calendar document (not one entry) that cannot be read at all."""


class Impact(enum.StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    HOLIDAY = "holiday"
    NONE = "none"          # "Non-Economic" and the like


_IMPACT_WORDS = {"high": Impact.HIGH, "medium": Impact.MEDIUM, "low": Impact.LOW, "holiday": Impact.HOLIDAY,
                 "non-economic": Impact.NONE, "none": Impact.NONE}


def impact_of(text: str) -> Impact:
    """``High``, ``High Impact Expected``, ``red`` ... ; ValueError for anything else."""
    word = text.strip().lower().removesuffix(" impact expected").removesuffix(" impact")
    word = {"red": "high", "orange": "medium", "yellow": "low", "gray": "none", "grey": "none"}.get(word, word)
    if word not in _IMPACT_WORDS:
        raise ValueError(f"unknown impact {text!r} (High, Medium, Low, Holiday or Non-Economic)")
    return _IMPACT_WORDS[word]


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    at_ms: int             # UTC
    currency: str          # ISO 4217, upper case
    impact: Impact
    title: str

    def __post_init__(self) -> None:
        if not isinstance(self.at_ms, int) or not MIN_MS <= self.at_ms < MAX_MS:
            raise ValueError(f"time {self.at_ms!r} is not a UTC instant between 2000 and 2100")
        if not isinstance(self.currency, str) or not CURRENCY_RE.fullmatch(self.currency):
            raise ValueError(f"currency {self.currency!r} is not a three-letter code")
        object.__setattr__(self, "impact", Impact(self.impact))
        if not isinstance(self.title, str) or not self.title.strip() or len(self.title) > MAX_TITLE:
            raise ValueError(f"title {self.title!r} must be 1 to {MAX_TITLE} characters")

    def describe(self) -> str:
        return f"{self.currency} {self.title} at {iso(self.at_ms)} ({self.impact.value} impact)"


@dataclass(frozen=True)
class Parsed:
    """What a source document gave: the good events, the refused entries (each "entry N:
    why"), and how many named no instant."""

    events: tuple[CalendarEvent, ...] = ()
    refused: tuple[str, ...] = ()
    untimed: int = 0


@dataclass(frozen=True)
class Calendar:
    """The calendar every worker and agent reads: events sorted by time, and the platform's
    news window, carried with it so that the worker's skip and the agent's refusal always
    judge by the same window."""

    events: tuple[CalendarEvent, ...] = ()
    source: str = ""
    fetched_at_ms: int = 0
    window: NewsWindow = field(default_factory=lambda: NewsWindow())

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", tuple(sorted(set(self.events), key=lambda e: (e.at_ms, e.currency,
                                                                                        e.title))))

    def high_impact(self) -> tuple[CalendarEvent, ...]:
        return tuple(e for e in self.events if e.impact is Impact.HIGH)



# ----------------------------------------------------------------------------- windows

@dataclass(frozen=True, slots=True)
class NewsWindow:
    """How long before and after a high-impact event no new position is opened."""

    before_ms: int = DEFAULT_BEFORE_MS
    after_ms: int = DEFAULT_AFTER_MS

    def __post_init__(self) -> None:
        for name in ("before_ms", "after_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 24 * 60 * MINUTE_MS:
                raise ValueError(f"news window {name} must be 0 to 1440 minutes in ms, got {value!r}")

    def covers(self, event: CalendarEvent, now_ms: int) -> bool:
        """Both edges included: at exactly 15 min before (or after) the window is on."""
        return event.at_ms - self.before_ms <= now_ms <= event.at_ms + self.after_ms


# No events, the default window: what a reader holds until the first calendar arrives.
EMPTY = Calendar()


def symbol_currencies(symbol: str) -> frozenset[str]:
    """The base and quote currency of a canonical symbol: the instrument table's, else a
    six-letter pair split in two (GBPNZD); an index or anything else names none."""
    known = INSTRUMENTS.get(symbol)
    if known is not None:
        return frozenset({known.base, known.quote})
    if len(symbol) == 6 and symbol.isalpha() and symbol.isupper():
        return frozenset({symbol[:3], symbol[3:]})
    return frozenset()


def blocking_event(calendar: Calendar, symbol: str, now_ms: int,
                   window: NewsWindow = NewsWindow()) -> CalendarEvent | None:
    """The first high-impact event of the symbol's base or quote currency whose window
    holds ``now_ms``, or None."""
    currencies = symbol_currencies(symbol)
    if not currencies:
        return None
    for event in calendar.events:
        if event.at_ms - window.before_ms > now_ms:
            break  # sorted by time: every later event's window starts later still
        if event.impact is Impact.HIGH and event.currency in currencies and window.covers(event, now_ms):
            return event
    return None


def events_near(calendar: Calendar, symbol: str, now_ms: int, span_ms: int = 86_400_000) -> tuple[CalendarEvent, ...]:
    """The events of the symbol's currencies within ``span_ms`` of ``now_ms``: what a decision
    record keeps of the calendar (a window longer than a day is not allowed)."""
    currencies = symbol_currencies(symbol)
    return tuple(e for e in calendar.events if e.currency in currencies and abs(e.at_ms - now_ms) <= span_ms)


# ----------------------------------------------------------------------------- the wire form

def to_json(calendar: Calendar) -> bytes:
    body = {"version": FORMAT_VERSION, "source": calendar.source, "fetched_at_ms": calendar.fetched_at_ms,
            "window": {"before_ms": calendar.window.before_ms, "after_ms": calendar.window.after_ms},
            "events": [{"at_ms": e.at_ms, "currency": e.currency, "impact": e.impact.value, "title": e.title}
                       for e in calendar.events]}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def from_json(raw: bytes) -> tuple[Calendar, tuple[str, ...]]:
    """The calendar of a KV value and the entries refused in it; CalendarError if the
    value as a whole is unreadable (the reader keeps its last good calendar)."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalendarError(f"calendar value is not JSON: {exc}") from None
    if not isinstance(body, Mapping) or body.get("version") != FORMAT_VERSION:
        raise CalendarError(f"calendar value is not a version {FORMAT_VERSION} calendar")
    entries = body.get("events")
    if not isinstance(entries, list) or len(entries) > MAX_EVENTS:
        raise CalendarError(f"calendar events must be a list of at most {MAX_EVENTS}")
    events, refused = [], []
    for index, entry in enumerate(entries):
        try:
            if not isinstance(entry, Mapping):
                raise ValueError("not an object")
            events.append(CalendarEvent(entry.get("at_ms"), entry.get("currency"), impact_of(str(entry.get("impact"))),
                                        entry.get("title")))
        except (ValueError, TypeError) as exc:
            refused.append(f"entry {index}: {exc}")
    fetched = body.get("fetched_at_ms")
    raw_window = body.get("window") or {}
    try:
        window = NewsWindow(raw_window.get("before_ms", DEFAULT_BEFORE_MS),
                            raw_window.get("after_ms", DEFAULT_AFTER_MS))
    except (ValueError, AttributeError) as exc:
        raise CalendarError(f"calendar window {raw_window!r}: {exc}") from None
    return Calendar(tuple(events), source=str(body.get("source", ""))[:200],
                    fetched_at_ms=fetched if isinstance(fetched, int) else 0, window=window), tuple(refused)


# ----------------------------------------------------------------------------- source formats

def parse(text: str | bytes, fmt: str) -> Parsed:
    """``fmt``: ``ff-json``, ``ff-xml`` or ``ical``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = text.decode("cp1252", errors="replace")  # the XML export is windows-1252
    readers = {"ff-json": parse_ff_json, "ff-xml": parse_ff_xml, "ical": parse_ical}
    if fmt not in readers:
        raise CalendarError(f"unknown calendar format {fmt!r} (ff-json, ff-xml or ical)")
    return readers[fmt](text)


def format_of(name: str) -> str:
    """The format a file or URL name suggests: .json, .xml, .ics."""
    lowered = name.lower().split("?")[0]
    for suffix, fmt in ((".json", "ff-json"), (".xml", "ff-xml"), (".ics", "ical"), (".ical", "ical")):
        if lowered.endswith(suffix):
            return fmt
    raise CalendarError(f"cannot tell the calendar format of {name!r}: name it .json, .xml or .ics, or say --format")


_UNTIMED = ("", "all day", "tentative", "tbd", "tba", "day 1", "day 2", "day 3")


class _Untimed(Exception):
    pass


def _collect(rows: Iterable[Any], read) -> Parsed:
    events, refused, untimed = [], [], 0
    for index, row in enumerate(rows):
        if index >= MAX_EVENTS:
            refused.append(f"entries after the first {MAX_EVENTS}: not read")
            break
        try:
            events.append(read(row))
        except _Untimed:
            untimed += 1
        except (ValueError, TypeError, KeyError) as exc:
            refused.append(f"entry {index}: {exc}")
    return Parsed(tuple(events), tuple(refused), untimed)


def parse_ff_json(text: str) -> Parsed:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalendarError(f"calendar JSON is unreadable: {exc}") from None
    if not isinstance(rows, list):
        raise CalendarError("calendar JSON must be a list of events")
    return _collect(rows, _ff_json_event)


def _ff_json_event(row: Any) -> CalendarEvent:
    if not isinstance(row, Mapping):
        raise ValueError("not an object")
    raw = str(row.get("date") or "").strip()
    if len(raw) <= 10:  # empty, or a date without a time of day: all day
        raise _Untimed
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"date {raw!r} is not ISO 8601") from None
    if when.tzinfo is None:
        raise ValueError(f"date {raw!r} has no UTC offset: its instant is unknown")
    return CalendarEvent(_ms(when), _currency(row.get("country")), impact_of(str(row.get("impact", ""))),
                         _title(row.get("title")))


def _xml_root(text: str) -> ET.Element:
    # A document type declaration is how entity expansion attacks start ("billion laughs");
    # the export has none, so none is accepted and the stdlib parser stays safe.
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise CalendarError("calendar XML with a DOCTYPE or ENTITY declaration is refused")
    try:
        return ET.fromstring(re.sub(r"^<\?xml[^>]*\?>", "", text.lstrip()))  # noqa: S314
    except ET.ParseError as exc:
        raise CalendarError(f"calendar XML is unreadable: {exc}") from None


def parse_ff_xml(text: str) -> Parsed:
    root = _xml_root(text)
    if root.tag != "weeklyevents":
        raise CalendarError(f"calendar XML root is <{root.tag}>, expected <weeklyevents>")
    return _collect(root.iter("event"), _ff_xml_event)


def _ff_xml_event(node: ET.Element) -> CalendarEvent:
    def text(tag: str) -> str:
        child = node.find(tag)
        return (child.text or "").strip() if child is not None else ""

    clock = text("time").lower()
    if clock in _UNTIMED:
        raise _Untimed
    try:
        day = dt.datetime.strptime(text("date"), "%m-%d-%Y")
        at = dt.datetime.strptime(clock, "%I:%M%p")
    except ValueError:
        raise ValueError(f"date {text('date')!r} time {text('time')!r} is not MM-DD-YYYY h:mmam") from None
    when = day.replace(hour=at.hour, minute=at.minute, tzinfo=dt.UTC)  # the XML export is in GMT
    return CalendarEvent(_ms(when), _currency(text("country")), impact_of(text("impact")), _title(text("title")))


def parse_ical(text: str) -> Parsed:
    lines = _unfold(text)
    if not lines or lines[0].upper() != "BEGIN:VCALENDAR":
        raise CalendarError("iCalendar text must start with BEGIN:VCALENDAR")
    return _collect(_vevents(lines), _ical_event)


def _unfold(text: str) -> list[str]:
    """RFC 5545 §3.1: a line starting with a space or tab continues the previous one."""
    out: list[str] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and out:
            out[-1] += line[1:]
        elif line.strip():
            out.append(line.rstrip())
    return out


def _vevents(lines: Sequence[str]) -> Iterable[dict[str, tuple[dict[str, str], str]]]:
    current: dict[str, tuple[dict[str, str], str]] | None = None
    for line in lines:
        upper = line.upper()
        if upper == "BEGIN:VEVENT":
            current = {}
        elif upper == "END:VEVENT" and current is not None:
            yield current
            current = None
        elif current is not None and ":" in line:
            head, _, value = line.partition(":")
            name, *params = head.split(";")
            current[name.upper()] = ({k.upper(): v for k, _, v in (p.partition("=") for p in params)}, value)


_CURRENCY_PREFIX = re.compile(r"^\s*\[?([A-Z]{3})\]?\s*[:\-\]]?\s+(.*)$")


def _ical_event(props: Mapping[str, tuple[dict[str, str], str]]) -> CalendarEvent:
    if "DTSTART" not in props:
        raise ValueError("VEVENT has no DTSTART")
    params, value = props["DTSTART"]
    if params.get("VALUE", "").upper() == "DATE" or len(value) == 8:
        raise _Untimed
    summary = _ical_text(props.get("SUMMARY", ({}, ""))[1])
    categories = [c.strip() for c in _ical_text(props.get("CATEGORIES", ({}, ""))[1]).split(",") if c.strip()]
    currency = next((c for c in categories if CURRENCY_RE.fullmatch(c)), None)
    title = summary
    prefix = _CURRENCY_PREFIX.match(summary)
    if currency is None and prefix:
        currency, title = prefix.group(1), prefix.group(2)
    impact = next((impact_of(c) for c in categories if c.lower().removesuffix(" impact") in _IMPACT_WORDS), None)
    if impact is None:
        impact = _priority_impact(props.get("PRIORITY", ({}, ""))[1])
    return CalendarEvent(_ms(_ical_time(value, params.get("TZID"))), _currency(currency), impact, _title(title))


def _ical_text(value: str) -> str:
    return value.replace("\\,", ",").replace("\\;", ";").replace("\\n", " ").replace("\\N", " ").replace("\\\\", "\\")


def _priority_impact(value: str) -> Impact:
    if not value.strip():
        raise ValueError("no impact: neither CATEGORIES (High/Medium/Low) nor PRIORITY")
    try:
        priority = int(value)
    except ValueError:
        raise ValueError(f"PRIORITY {value!r} is not 0-9") from None
    if not 1 <= priority <= 9:
        raise ValueError(f"PRIORITY {priority} names no impact (1-4 high, 5 medium, 6-9 low)")
    return Impact.HIGH if priority <= 4 else Impact.MEDIUM if priority == 5 else Impact.LOW


def _ical_time(value: str, tzid: str | None) -> dt.datetime:
    try:
        naive = dt.datetime.strptime(value.rstrip("Zz"), "%Y%m%dT%H%M%S")
    except ValueError:
        raise ValueError(f"DTSTART {value!r} is not YYYYMMDDTHHMMSS[Z]") from None
    if value.upper().endswith("Z"):
        return naive.replace(tzinfo=dt.UTC)
    if not tzid:
        raise ValueError(f"DTSTART {value!r} is floating (no Z, no TZID): its instant is unknown")
    try:
        zone = zoneinfo.ZoneInfo(tzid.strip('"'))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"TZID {tzid!r} is not a time zone the IANA database knows") from None
    return naive.replace(tzinfo=zone)


def _ms(when: dt.datetime) -> int:
    seconds = when.timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"time {when!r} is not finite")
    return int(round(seconds * 1000))


def _currency(value: Any) -> str:
    code = str(value or "").strip().upper()
    if not CURRENCY_RE.fullmatch(code):
        raise ValueError(f"currency {value!r} is not a three-letter code")
    return code


def _title(value: Any) -> str:
    title = " ".join(str(value or "").split())
    if not title:
        raise ValueError("event has no title")
    return title[:MAX_TITLE]


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def merge(parsed: Parsed, *, source: str, fetched_at_ms: int, window: NewsWindow | None = None) -> Calendar:
    return Calendar(parsed.events, source=source, fetched_at_ms=fetched_at_ms, window=window or NewsWindow())


__all__ = [
    "DEFAULT_AFTER_MS", "DEFAULT_BEFORE_MS", "EMPTY", "Calendar", "CalendarError", "CalendarEvent", "Impact",
    "NewsWindow", "Parsed", "blocking_event", "format_of", "from_json", "impact_of", "iso", "merge", "parse",
    "symbol_currencies", "to_json",
]

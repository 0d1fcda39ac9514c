"""Which agent a log line is about. A VPS runs one agent per process, but the demo, the soak
and the tests run hundreds in one: without the user on each line, a killed-and-restarted
agent that went silent could not be told from its neighbours (issue 12's soak).

Every task an agent spawns, and every call it makes on its MT5 thread, runs in a context that
names its user (``AGENT_USER``); ``UserTag`` puts it on each record as ``agent_user``
("-" outside any agent), which ``FORMAT`` shows."""

from __future__ import annotations

import contextvars
import logging

AGENT_USER: contextvars.ContextVar[str] = contextvars.ContextVar("mt5fleet_agent_user", default="-")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(agent_user)s]: %(message)s"


def agent_context(user_id: str) -> contextvars.Context:
    """A copy of the current context in which ``AGENT_USER`` is ``user_id``."""
    context = contextvars.copy_context()
    context.run(AGENT_USER.set, user_id)
    return context


class UserTag(logging.Filter):
    """Adds ``agent_user`` to every record a handler emits (a handler filter: logger filters
    do not see records propagated from child loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.agent_user = AGENT_USER.get()
        return True


def tag_handlers(*handlers: logging.Handler) -> None:
    """Show the agent's user on these handlers' lines."""
    for handler in handlers:
        handler.addFilter(UserTag())
        handler.setFormatter(logging.Formatter(FORMAT))

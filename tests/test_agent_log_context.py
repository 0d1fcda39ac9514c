"""Each agent's log lines name its user, also with many agents in one process (the demo, the
soak) and for what runs on the agent's MT5 thread."""

from __future__ import annotations

import asyncio
import io
import logging

from mt5fleet.client.app.log_context import agent_context, tag_handlers
from mt5fleet.client.app.mt5_thread import Mt5Thread

log = logging.getLogger("mt5fleet.agent.test")


async def _one_agent(mt5: Mt5Thread, n: int) -> None:
    await asyncio.sleep(0.01 * n)
    log.warning("on the loop %d", n)
    await mt5.run(lambda: log.warning("on the MT5 thread %d", n))


def test_lines_of_two_agents_in_one_process_name_their_users():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    tag_handlers(handler)
    logging.getLogger().addHandler(handler)
    threads = {user: Mt5Thread(user) for user in ("alice", "bob")}

    async def main() -> None:
        await asyncio.gather(*(asyncio.create_task(_one_agent(threads[user], n), context=agent_context(user))
                               for n, user in enumerate(("alice", "bob"))))
        log.warning("outside any agent")
    try:
        asyncio.run(main())
    finally:
        logging.getLogger().removeHandler(handler)
        for thread in threads.values():
            thread.shutdown()
    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[0].rsplit(" ", 1)[-1] + " " + line.split(": ", 1)[1] for line in lines] == [
        "[alice] on the loop 0", "[alice] on the MT5 thread 0", "[bob] on the loop 1", "[bob] on the MT5 thread 1",
        "[-] outside any agent"]

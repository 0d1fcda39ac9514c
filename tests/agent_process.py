"""An agent in an OS process of its own, for faults that kill the process.

The MT5 terminal outlives the agent in real life (terminal64.exe is another process), so
the simulated terminal stays in the test process and this agent reaches it through a
``multiprocessing`` manager, as the real package reaches the terminal over IPC. With
``--die-after-order-send`` the process SIGKILLs itself the moment ``order_send`` has
returned: the order is at the broker, nothing after it ran (no outcome, no report, no
sqlite close).

The test side: ``serve_terminal(sim)`` and ``start_agent_process(...)``; the child side:
``python tests/agent_process.py <json>``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import threading
import time
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

READY = "agent-ready"


class TerminalManager(BaseManager):
    pass


def serve_terminal(sim: Any) -> tuple[tuple[str, int], bytes]:
    """Serve ``sim`` to other processes (a daemon thread of this one); (address, authkey)."""
    authkey = secrets.token_bytes(16)
    serving = type("ServingTerminal", (BaseManager,), {})  # a registry of its own: this sim only
    serving.register("terminal", callable=lambda: sim)
    server = serving(address=("127.0.0.1", 0), authkey=authkey).get_server()
    threading.Thread(target=server.serve_forever, name="terminal-ipc", daemon=True).start()
    return server.address, authkey


async def start_agent_process(raw_settings: dict, address: tuple[str, int], authkey: bytes, clock_now: float,
                              *, die_after_order_send: bool) -> asyncio.subprocess.Process:
    """The agent in a child process, once it says it is connected and trading."""
    spec = {"settings": raw_settings, "address": list(address), "authkey": authkey.hex(), "clock_now": clock_now,
            "wall": time.time(), "die_after_order_send": die_after_order_send}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__)), json.dumps(spec), stdout=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    if line.decode().strip() != READY:
        process.kill()
        raise AssertionError(f"the agent process did not start: {line!r}")
    return process


# --------------------------------------------------------------------------- the child


class DieAfterOrderSend:
    """The terminal API, except that the process dies as soon as an order was sent."""

    def __init__(self, api: Any) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def order_send(self, request: dict) -> Any:
        result = self._api.order_send(request)
        os.kill(os.getpid(), signal.SIGKILL)
        return result  # never reached


async def _child(spec: dict) -> None:
    from mt5fleet.client.adapters.config_file import parse_settings
    from mt5fleet.client.app.agent import Agent
    from mt5fleet.proto.domain.clock import AcceleratedClock

    TerminalManager.register("terminal")
    manager = TerminalManager(address=tuple(spec["address"]), authkey=bytes.fromhex(spec["authkey"]))
    manager.connect()
    api: Any = manager.terminal()
    if spec["die_after_order_send"]:
        api = DieAfterOrderSend(api)
    clock = AcceleratedClock(spec["clock_now"] + (time.time() - spec["wall"]), 1.0)  # the test's time, here
    agent = Agent(parse_settings(spec["settings"]), api, clock=clock)
    await agent.start()
    while not (agent.nc is not None and agent.nc.is_connected and len(agent.executor.symbol_map) >= 3):
        await asyncio.sleep(0.02)
    print(READY, flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(_child(json.loads(sys.argv[1])))

"""What the benchmarks share: the machine's description, a clock on a Wednesday market
morning that every process agrees on, the worker's users and signals, statistics, the
JSON output, and :class:`AgentPool` — many simulated agents, each one NATS connection
with a plain subscription on its own ``tc.<uid>.commands``, spread over a few processes.

Imported as ``_common`` by the scripts of this folder (``python bench/<x>.py`` puts the
folder first on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import multiprocessing
import os
import platform
import resource
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from mt5fleet.proto.domain.trading import Signal
from mt5fleet.proto.runtime.tasks import cancel_and_wait
from mt5fleet.proto.v1 import account_pb2, commands_pb2, config_pb2, prices_pb2, signals_pb2, symbols_pb2
from mt5fleet.proto.validation import check_signal

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"

# Wednesday 18 November 2026, 10:00 New York: the FX market is open and far from rollover.
WEDNESDAY = 1_795_014_000_000
# time.monotonic() is CLOCK_MONOTONIC on Linux: one clock for every process of the machine,
# so receipt times taken in agent processes compare with send times taken here.
_origin = time.monotonic()


def set_origin(origin: float) -> None:
    """Make this process's ``now_ms()`` the same as the process that chose ``origin``."""
    global _origin
    _origin = origin


def origin() -> float:
    return _origin


def now_ms() -> int:
    return WEDNESDAY + int((time.monotonic() - _origin) * 1000)


# ---------------------------------------------------------------------- the machine
def machine(nats_server_version: Sequence[int] | None = None) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or "unknown")
    ram_kb = next((int(line.split()[1]) for line in _lines("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(ram_kb / 1024 ** 2, 1),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "nats_server": ".".join(map(str, nats_server_version)) if nats_server_version else None,
        "nats_py": metadata.version("nats-py"),
        "protobuf": metadata.version("protobuf"),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "note": "shared machine: other jobs run beside the benchmark; compare ratios within one run",
    }


def command_line(script: str, argv: Sequence[str]) -> str:
    """How this run was started, without where its output went."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--output":
            skip = True
        elif not arg.startswith("--output="):
            kept.append(arg)
    return " ".join(["python", f"bench/{script}", *kept])


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the server, started after, inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_mb() -> float:
    """Resident set size of this process (VmRSS)."""
    kb = next((int(line.split()[1]) for line in _lines("/proc/self/status") if line.startswith("VmRSS")), 0)
    return kb / 1024


def cpu_s() -> float:
    """User + system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_pid(server: Any) -> int:
    """The EmbeddedNats server's process id (it exposes no public one)."""
    return server._process.pid


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process (the nats-server), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- statistics
def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks; ``ordered`` sorted ascending."""
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(seconds: Iterable[float]) -> dict[str, Any]:
    """p50/p90/p99/p99.9/max in ms, and the CDF as 101 quantiles (0, 1, ..., 100 %)."""
    ordered = sorted(seconds)
    ms = [x * 1000 for x in ordered]
    return {"samples": len(ms), "p50_ms": _r(quantile(ms, 0.5)), "p90_ms": _r(quantile(ms, 0.9)),
            "p99_ms": _r(quantile(ms, 0.99)), "p999_ms": _r(quantile(ms, 0.999)),
            "max_ms": _r(ms[-1]) if ms else None, "cdf_ms": [_r(quantile(ms, i / 100)) for i in range(101)]}


def _r(x: float) -> float:
    return round(x, 3)


# ---------------------------------------------------------------------- output
def write_results(name: str, results: dict[str, Any]) -> Path:
    """docs/benchmarks/<name>.json (or ``name`` itself if it is a path ending in .json), then
    its plot beside it."""
    path = Path(name) if name.endswith(".json") else OUT / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    try:
        import plots  # bench/plots.py; matplotlib only when writing
    except ImportError as exc:  # no matplotlib here: the JSON is what counts
        print(f"no plot ({exc})")
        png = None
    else:
        png = plots.plot_file(path)
    print(f"wrote {path}" + (f" and {png}" if png else ""))
    return path


# ---------------------------------------------------------------------- the worker's users
EURUSD_SPEC = dict(symbol="EURUSD", broker_symbol="EURUSD.m", digits=5, point=1e-5, contract_size=100_000,
                   tick_size=1e-5, tick_value=1.0, volume_min=0.01, volume_max=100, volume_step=0.01, stops_level=0,
                   trade_mode=4, currency_base="EUR", currency_profit="USD", currency_margin="EUR")


def uid_of(index: int) -> str:
    return f"u{index:05d}"


def user_config(uid: str, **fields: Any) -> config_pb2.ClientConfig:
    config = config_pb2.ClientConfig(user_id=uid, tier_name="pro", trading_symbols=["EURUSD"], **fields)
    config.risk.max_risk_per_trade = 1.0
    return config


def user_quote(index: int) -> tuple[float, float]:
    """Brokers within +-5 points of the reference 1.10000, 1 pip spread."""
    bid = round(1.1 + (index % 11 - 5) * 1e-5, 5)
    return bid, round(bid + 1e-4, 5)


def user_specs(uid: str, now: int) -> symbols_pb2.SymbolSpecList:
    return symbols_pb2.SymbolSpecList(user_id=uid, timestamp=now, specs=[symbols_pb2.SymbolSpec(**EURUSD_SPEC)])


def user_account(uid: str, now: int) -> account_pb2.AccountProfile:
    return account_pb2.AccountProfile(user_id=uid, account_number="1", base_currency="USD", balance=1e4,
                                      equity=1e4, margin_free=1e4, timestamp=now)


def populate(worker: Any, users: int) -> None:
    """Fill the worker's state through the same handlers its JetStream consumers call."""
    now = now_ms()
    for i in range(users):
        uid = uid_of(i)
        worker.state.on_config(uid, user_config(uid, max_quote_age_ms=3_600_000).SerializeToString())
        bid, ask = user_quote(i)
        batch = prices_pb2.ClientPriceStream(user_id=uid, batch_timestamp=now, prices=[prices_pb2.ClientPrice(
            symbol="EURUSD", bid=bid, ask=ask, spread=10, timestamp=now)])
        worker.state.on_prices(f"tc.{uid}.prices", batch.SerializeToString())
        worker.state.on_specs(f"tc.{uid}.symbols", user_specs(uid, now).SerializeToString())
        worker.state.on_account(f"tc.{uid}.account", user_account(uid, now).SerializeToString())


def universal_signal(signal_id: str, *, ttl_ms: int = 600_000) -> signals_pb2.UniversalSignal:
    now = now_ms()
    return signals_pb2.UniversalSignal(
        signal_id=signal_id, symbol="EURUSD", order_type=commands_pb2.BUY, reference_bid=1.1, reference_ask=1.10002,
        entry=1.10002, stop_loss=1.09502, take_profit=1.11002, confidence=0.8, created_at=now,
        expires_at=now + ttl_ms, strategy="bench", source="OANDA")


def signal(signal_id: str) -> Signal:
    return check_signal(universal_signal(signal_id), now_ms())


# ---------------------------------------------------------------------- simulated agents
PRICE_SYMBOLS = (("EURUSD", 5, 0.0), ("GBPUSD", 5, 0.17), ("USDJPY", 3, 148.9))


def price_batch(index: int, uid: str, sequence: int, now: int) -> prices_pb2.ClientPriceStream:
    """What an agent sends every second: its broker's latest quote per streamed symbol."""
    bid, ask = user_quote(index)
    wiggle = (sequence % 3 - 1) * 1e-5
    prices = []
    for symbol, digits, shift in PRICE_SYMBOLS:
        scale = 100 if digits == 3 else 1
        b, a = round((bid + shift + wiggle) * scale, digits), round((ask + shift + wiggle) * scale, digits)
        prices.append(prices_pb2.ClientPrice(symbol=symbol, bid=b, ask=a, spread=round((a - b) * 10 ** digits),
                                             timestamp=now, broker_server="BenchBroker-Live",
                                             broker_symbol=symbol + ".m", digits=digits))
    return prices_pb2.ClientPriceStream(user_id=uid, broker_name="Bench Broker Ltd",
                                        account_number=str(5_000_000 + index), prices=prices,
                                        batch_timestamp=now, sequence=sequence)


class AgentPool:
    """Simulated connected agents: ``processes`` child processes share ``uids``; each agent is
    one NATS connection made by ``natsconn.connect`` (as the real agent does) holding

    * ``mode="plain"``: a plain subscription on ``tc.<uid>.commands`` — the agent's live path;
    * ``mode="consumer"``: a per-user live JetStream push consumer filtered to that subject
      (ephemeral, deliver new, explicit ack) — the design SPEC §2.2 rules out, for contrast.

    With ``prices`` every agent also publishes a real ClientPriceStream to
    ``tc.<uid>.prices`` through JetStream every ``price_period_s`` (staggered, with
    ``Nats-Msg-Id``, as the agent's publisher does). With ``echo`` the first agent of the
    first process answers requests on ``bench.echo``.

    Every command received is recorded as (``time.monotonic()``, signal id) after decoding.
    """

    def __init__(self, url: str, uids: Sequence[str], *, processes: int = 2, mode: str = "plain",
                 prices: bool = False, price_period_s: float = 1.0, echo: bool = False,
                 connect_concurrency: int = 100) -> None:
        self.url, self.uids, self.mode = url, list(uids), mode
        self.prices, self.price_period_s, self.echo = prices, price_period_s, echo
        self.processes = max(1, min(processes, len(self.uids)))
        self.connect_concurrency = connect_concurrency
        self.shares = [self.uids[p::self.processes] for p in range(self.processes)]
        self._children: list[tuple[Any, Any]] = []
        self.connect_s = 0.0
        self.child_rss_mb: list[float] = []

    async def __aenter__(self) -> AgentPool:
        context = multiprocessing.get_context("spawn")
        started = time.perf_counter()
        index_of = {uid: i for i, uid in enumerate(self.uids)}
        for p, share in enumerate(self.shares):
            parent, child = context.Pipe()
            spec = {"url": self.url, "uids": share, "mode": self.mode, "prices": self.prices,
                    "price_period_s": self.price_period_s, "echo": self.echo and p == 0, "origin": origin(),
                    "concurrency": self.connect_concurrency, "index_of": {uid: index_of[uid] for uid in share}}
            process = context.Process(target=_pool_child, args=(child, spec), daemon=True)
            process.start()
            self._children.append((process, parent))
        self.pids = [process.pid for process, _ in self._children]
        replies = await self._ask_all(None, timeout=600)
        self.connect_s = time.perf_counter() - started
        self.child_rss_mb = [reply["rss_mb"] for reply in replies]
        return self

    async def __aexit__(self, *_: Any) -> None:
        for _, conn in self._children:
            try:
                conn.send(("stop", None))
            except OSError:
                pass
        for process, _ in self._children:
            await asyncio.get_running_loop().run_in_executor(None, process.join, 30)
            if process.is_alive():
                process.kill()

    async def arm(self, per_uid: int) -> None:
        """Forget what was received; each agent now expects ``per_uid`` commands."""
        await self._ask_all(lambda share: ("arm", per_uid * len(share)), timeout=30)

    async def collect(self, timeout: float) -> list[tuple[float, str]]:
        """Wait (up to ``timeout``) until every agent has what it expects; all receipts."""
        replies = await self._ask_all(lambda share: ("collect", timeout), timeout=timeout + 60)
        return [row for reply in replies for row in reply["received"]]

    async def stats(self) -> dict[str, int]:
        replies = await self._ask_all(lambda share: ("stats", None), timeout=30)
        return {key: sum(reply[key] for reply in replies) for key in ("prices_published", "prices_failed")}

    async def _ask_all(self, message: Any, timeout: float) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        for (_, conn), share in zip(self._children, self.shares, strict=True):
            if message is not None:
                conn.send(message(share))

        async def reply(process: Any, conn: Any) -> dict[str, Any]:
            deadline = time.monotonic() + timeout
            while not await loop.run_in_executor(None, conn.poll, 0.5):
                if not process.is_alive():
                    raise RuntimeError(f"agent process {process.pid} died (exit code {process.exitcode})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"agent process {process.pid} did not answer in {timeout} s")
            answer = conn.recv()
            if "error" in answer:
                raise RuntimeError(f"agent process {process.pid}: {answer['error']}")
            return answer

        return list(await asyncio.gather(*(reply(p, c) for p, c in self._children)))


def _pool_child(conn: Any, spec: dict[str, Any]) -> None:
    try:
        asyncio.run(_PoolChild(conn, spec).run())
    except Exception as exc:  # the parent says which process and why
        conn.send({"error": repr(exc)})


class _PoolChild:
    def __init__(self, conn: Any, spec: dict[str, Any]) -> None:
        self.conn, self.spec = conn, spec
        self.received: list[tuple[float, str]] = []
        self.expected = 0
        self.complete = asyncio.Event()
        self.published = self.failed = 0
        self.clients: list[Any] = []
        self.tasks: list[asyncio.Task] = []

    async def run(self) -> None:
        from mt5fleet.proto.runtime import natsconn

        set_origin(self.spec["origin"])
        raise_nofile()
        slots = asyncio.Semaphore(self.spec["concurrency"])

        async def agent(uid: str) -> Any:
            async with slots:
                nc = await natsconn.connect(natsconn.NatsSettings(servers=(self.spec["url"],), name=f"agent-{uid}"),
                                            inbox_prefix=f"_INBOX_{uid}")
                subject = f"tc.{uid}.commands"
                if self.spec["mode"] == "consumer":
                    from nats.js.api import DeliverPolicy

                    await nc.jetstream().subscribe(subject, cb=self.on_command, deliver_policy=DeliverPolicy.NEW)
                else:
                    await nc.subscribe(subject, cb=self.on_command)
                await nc.flush()
                return nc

        self.clients = list(await asyncio.gather(*(agent(uid) for uid in self.spec["uids"])))
        if self.spec["echo"]:
            async def echo(message: Any) -> None:
                await message.respond(message.data)
            await self.clients[0].subscribe("bench.echo", cb=echo)
            await self.clients[0].flush()
        if self.spec["prices"]:
            for nc, uid in zip(self.clients, self.spec["uids"], strict=True):
                self.tasks.append(asyncio.create_task(self.stream_prices(nc, uid)))
        self.conn.send({"rss_mb": rss_mb(), "agents": len(self.clients)})
        loop = asyncio.get_running_loop()
        while True:
            while not await loop.run_in_executor(None, self.conn.poll, 0.2):
                pass
            command, argument = self.conn.recv()
            if command == "stop":
                break
            if command == "arm":
                self.received, self.expected = [], argument
                self.complete.clear()
                self.conn.send({"armed": True})
            elif command == "collect":
                try:
                    await asyncio.wait_for(self.complete.wait(), argument)
                except TimeoutError:
                    pass
                self.conn.send({"received": self.received})
            elif command == "stats":
                self.conn.send({"prices_published": self.published, "prices_failed": self.failed})
        await cancel_and_wait(self.tasks)  # nats-py may swallow one cancellation mid-publish
        await asyncio.gather(*(nc.close() for nc in self.clients), return_exceptions=True)

    async def on_command(self, message: Any) -> None:
        at = time.monotonic()
        self.received.append((at, commands_pb2.TradingCommand.FromString(message.data).signal_id))
        if self.expected and len(self.received) >= self.expected:
            self.complete.set()

    async def stream_prices(self, nc: Any, uid: str) -> None:
        js = nc.jetstream()
        index = self.spec["index_of"][uid]
        period = self.spec["price_period_s"]
        loop = asyncio.get_running_loop()
        # Agents start at random moments: spread them over the period.
        due = loop.time() + period * (index * 0.618034 % 1.0)
        sequence = 0
        while True:
            await asyncio.sleep(max(due - loop.time(), 0))
            due += period
            sequence += 1
            batch = price_batch(index, uid, sequence, now_ms())
            try:
                await js.publish(f"tc.{uid}.prices", batch.SerializeToString(), timeout=5,
                                 headers={"Nats-Msg-Id": f"{uid}:p:{sequence}"})
                self.published += 1
            except Exception:  # best effort, as the agent's prices are
                self.failed += 1

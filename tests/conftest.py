"""Shared fixtures: a real nats-server with JetStream on a free loopback port."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mt5fleet.proto.embedded_nats import EmbeddedNats

# Test helpers (factories) live beside the tests; importlib mode does not add this folder.
sys.path.insert(0, str(Path(__file__).parent))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedNats]:
    """One server for the session: tests that only publish/subscribe share it."""
    with EmbeddedNats(server_name="mt5fleet-test-session") as server:
        yield server


@pytest.fixture
def fresh_nats_server() -> Iterator[EmbeddedNats]:
    """A server of the test's own, for tests that stop, restart or fill it."""
    with EmbeddedNats(server_name="mt5fleet-test") as server:
        yield server


@pytest.fixture
async def nc(fresh_nats_server: EmbeddedNats) -> AsyncIterator:
    import nats

    client = await nats.connect(fresh_nats_server.url, max_reconnect_attempts=1)
    yield client
    await client.close()

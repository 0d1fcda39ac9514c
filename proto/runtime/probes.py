"""The HTTP endpoints every cluster process serves: ``/metrics`` for Prometheus,
``/healthz`` (liveness: the event loop answers) and ``/readyz`` (readiness: NATS connected)
for Kubernetes probes."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def probe_app(registry: CollectorRegistry, nc: Any) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"nats": nc.is_connected}, status=200 if nc.is_connected else 503)

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return app

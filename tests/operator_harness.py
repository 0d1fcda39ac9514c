"""For the operator's tests: TradingClient bodies as the API server stores them (the
examples, defaulted by the CRD's own schema), RFC 7386 merge patches as it applies them,
and a real nats-server in JWT operator mode with the fleet's streams and buckets.

Import from a test module as ``from operator_harness import stored_body`` (conftest puts
this folder on ``sys.path``; there is no package ``tests``).
"""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import nats
import yaml
from nats.aio.client import RawCredentials

from mt5fleet.operator.adapters.nats_accounts import create_trust_chain
from mt5fleet.operator.app import runtime
from mt5fleet.operator.core import crd, models
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMESPACE = "trading"


def openapi_schema() -> dict[str, Any]:
    """The TradingClient CRD's openAPIV3Schema, as generated from the models."""
    return crd.build()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """What the API server does before storing (and before CEL): structural defaulting."""
    value = copy.deepcopy(value)
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        value = {key: apply_defaults(schema["additionalProperties"], item) for key, item in value.items()}
    elif isinstance(value, list) and "items" in schema:
        value = [apply_defaults(schema["items"], item) for item in value]
    return value


def example_documents() -> list[dict[str, Any]]:
    """Every document of examples/*.yaml (TradingClients and their Secrets), file by file."""
    return [doc for path in sorted(EXAMPLES.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def stored_body(name: str, generation: int = 1, **spec: Any) -> dict[str, Any]:
    """An example TradingClient as the API server stores it: defaulted by the CRD's
    schema, with namespace, uid and generation (``spec`` overrides top-level spec fields)."""
    [doc] = [d for d in example_documents() if d["kind"] == models.KIND and d["metadata"]["name"] == name]
    doc["spec"].update(spec)
    body = apply_defaults(openapi_schema(), doc)
    body["metadata"].update(namespace=NAMESPACE, uid=str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                            generation=generation, resourceVersion=str(generation),
                            creationTimestamp="2026-01-05T09:00:00Z")
    return body


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies kopf's status patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


@contextlib.asynccontextmanager
async def jwt_nats(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, Any, runtime.OperatorOptions]]:
    """An operator-mode nats-server with the fleet's streams and buckets, the service
    user's connection, and the options ``runtime.start`` reaches it with."""
    chain = create_trust_chain()
    with EmbeddedNats(server_name="mt5fleet-test-handlers", store_dir=tmp_path / "store",
                      operator=chain.server_mode()) as server:
        service = await nats.connect(server.url, user_credentials=RawCredentials(chain.service_user.creds_text))
        await bootstrap.bootstrap(service.jetstream(), subjects.build_layout())
        options = runtime.embedded_options(chain, server.url, tmp_path, http_host="127.0.0.1", http_port=0)
        try:
            yield server, service, options
        finally:
            await service.close()

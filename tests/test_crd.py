"""The TradingClient CRD: generated from the models, committed in the chart, valid, and
in agreement with the reader on every body, good or bad. The reader (``admission.py``)
checks bodies against this generated CRD with jsonschema and cel-python; the checks here
translate the schema independently and evaluate the rules themselves, so a mistake in the
reader's Kubernetes semantics (closing objects, defaulting, field paths) still shows.

The schema is exercised with ``jsonschema`` (Draft 4: OpenAPI v3.0's boolean
``exclusiveMinimum`` is Draft 4's), the CRD object with ``kubernetes-validate`` (the
apiextensions.k8s.io/v1 schema of real Kubernetes releases, offline) and the CEL rules
with ``cel-python``. The API server prunes unknown fields and ``kubectl apply`` (strict
field validation, the default since 1.27) refuses them; a Draft 4 validator does neither,
so the translation below closes every object that lists its properties.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from operator_harness import apply_defaults, example_documents, openapi_schema

from mt5fleet.client.sim.broker import BROKERS
from mt5fleet.operator.core import admission, crd, models

OLDEST_KUBERNETES = "1.29.0"  # CEL validation rules are GA from 1.29
PRO_TRADING_PAIRS = 5  # SPEC §4

# ---------------------------------------------------------------------- helpers


def draft4(schema: Any) -> Any:
    """The OpenAPI schema as Draft 4 JSON Schema: objects closed, x-kubernetes-* dropped."""
    if isinstance(schema, list):
        return [draft4(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: draft4(value) for key, value in schema.items()
           if not key.startswith("x-kubernetes-") and key not in ("default", "description")}
    if "properties" in schema:
        out["properties"] = {name: draft4(sub) for name, sub in schema["properties"].items()}
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def validator() -> Any:
    import jsonschema
    schema = draft4(openapi_schema())
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def dotted(path: typing.Iterable[Any]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def schema_paths(validator: Any, resource: Mapping[str, Any]) -> set[str]:
    """Where the schema refuses a resource, as the reader names fields ("spec.risk.maxLot")."""
    paths = set()
    for error in validator.iter_errors(resource):
        path = list(error.absolute_path)
        if error.validator == "required":
            paths |= {dotted([*path, name]) for name in error.validator_value if name not in error.instance}
        elif error.validator == "additionalProperties" and error.validator_value is False:
            known = error.schema.get("properties", {})
            paths |= {dotted([*path, name]) for name in error.instance if name not in known}
        else:
            # A bad value in a map (symbolMap) is the map's fault for the reader.
            schema_path = list(error.absolute_schema_path)
            if len(schema_path) >= 2 and schema_path[-2] == "additionalProperties":
                path = path[:-1]
            paths.add(dotted(path))
    return paths


def reader_paths(spec: Any) -> set[str]:
    """Where the reader refuses a spec for what the schema states (the CEL rules aside)."""
    try:
        admission.parse_spec(spec)
    except models.SpecError as error:
        rules = tuple(rule.message for rule in models.CEL_RULES)
        return {problem.split(": ", 1)[0] for problem in error.problems if not problem.endswith(rules)}
    return set()


def resource(spec: Any) -> dict[str, Any]:
    return {"apiVersion": models.API_VERSION, "kind": models.KIND, "metadata": {"name": "x"}, "spec": spec}


def spec_schema() -> dict[str, Any]:
    return openapi_schema()["properties"]["spec"]


def model_rules(schema: Mapping[str, Any]) -> list[dict[str, str]]:
    """An object's rules but the generated one refusing unknown fields."""
    unknown = crd.unknown_field_rule(list(schema["properties"]))
    return [rule for rule in schema["x-kubernetes-validations"] if rule != unknown]


def example_clients() -> list[dict[str, Any]]:
    return [doc for doc in example_documents() if doc.get("kind") == models.KIND]


def full_spec() -> dict[str, Any]:
    """A valid spec with every field present and every list filled (the enterprise example)."""
    dave = next(doc for doc in example_clients() if doc["spec"]["tier"] == "enterprise")
    spec = models.to_mapping(admission.parse_spec(dave["spec"]))
    spec["risk"]["allowedSymbols"] = spec["symbols"]["trading"][:2]
    return spec


# ---------------------------------------------------------------------- (a) generated and committed


def test_committed_crd_is_the_generated_one() -> None:
    assert crd.CRD_PATH.is_file(), f"{crd.CRD_PATH} is missing: run `{crd.REGENERATE}`"
    committed = crd.CRD_PATH.read_text(encoding="utf-8")
    assert committed == crd.render(), f"the chart's CRD drifted from operator/core/models.py: run `{crd.REGENERATE}`"


def test_render_is_stable_and_reads_back_as_build() -> None:
    text = crd.render()
    assert text == crd.render()
    assert text.startswith("# Generated") and crd.REGENERATE in text.splitlines()[1]
    assert yaml.safe_load(text) == crd.build()


def test_entry_point_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main([]) == 0
    assert capsys.readouterr().out == crd.render()


# ---------------------------------------------------------------------- (b) a valid, structural CRD


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_crd_is_a_valid_apiextensions_v1_object(version: str) -> None:
    import kubernetes_validate
    version = kubernetes_validate.latest_version() if version == "latest" else version
    kubernetes_validate.validate(crd.build(), version, strict=True)  # raises with the offending path


def test_crd_names_scope_subresources_and_columns() -> None:
    body = crd.build()
    assert body["metadata"]["name"] == "tradingclients.mt5fleet.io"
    spec = body["spec"]
    assert (spec["group"], spec["scope"]) == ("mt5fleet.io", "Namespaced")
    assert spec["names"] == {"kind": "TradingClient", "listKind": "TradingClientList", "plural": "tradingclients",
                             "singular": "tradingclient", "shortNames": ["tc"]}
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert {"Tier", "Phase", "Connected", "Age", "User"} <= set(columns)
    assert columns["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    assert columns["Connected"]["jsonPath"] == '.status.conditions[?(@.type=="AgentConnected")].status'
    assert "AgentConnected" in models.CONDITION_TYPES


def test_printer_columns_point_at_fields_of_the_schema() -> None:
    schema = openapi_schema()
    for column in crd.PRINTER_COLUMNS:
        if column["jsonPath"].startswith(".metadata."):
            continue
        node = schema
        for part in re.sub(r"\[\?\(.*?\)\]", ".[]", column["jsonPath"]).strip(".").split("."):
            node = node["items"] if part == "[]" else node["properties"][part]
        assert node["type"] == column["type"], column


# What a structural schema node may carry here: no $ref, allOf/anyOf/oneOf/not, uniqueItems
# or patternProperties (none is needed). Unknown fields are preserved in the spec's objects
# only, for their rule to refuse them (test_every_spec_object_refuses_unknown_fields).
STRUCTURAL_KEYS = {
    "description", "type", "format", "enum", "default", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "pattern", "minLength", "maxLength", "minItems", "maxItems", "maxProperties",
    "minProperties", "items", "properties", "required", "additionalProperties", "x-kubernetes-validations",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-preserve-unknown-fields",
}
TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool}


def schema_nodes(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path or "<root>", schema
    for name, sub in schema.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), Mapping):
        yield from schema_nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from schema_nodes(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("path,node", list(schema_nodes(openapi_schema())), ids=lambda value: str(value)[:60])
def test_every_schema_node_is_structural(path: str, node: Mapping[str, Any]) -> None:
    assert set(node) <= STRUCTURAL_KEYS, f"{path}: keys a structural schema does not allow here"
    assert node.get("type") in TYPES, f"{path}: every node needs a type"
    if node["type"] == "object":
        assert ("properties" in node) != ("additionalProperties" in node) or path == ".metadata", path
        assert node.get("additionalProperties", {}) is not False, f"{path}: the API server refuses the CRD"
        assert set(node.get("required", ())) <= set(node.get("properties", {})), path
    if node["type"] == "array":
        assert isinstance(node.get("items"), Mapping), f"{path}: an array needs items"
    for value in node.get("enum", ()):
        assert isinstance(value, TYPES[node["type"]]), path
    if "format" in node:
        assert node["format"] in {"int64", "int32", "date-time"}, path


def test_metadata_is_left_to_the_api_server() -> None:
    assert openapi_schema()["properties"]["metadata"] == {"type": "object"}


def test_defaults_are_valid_values_of_their_own_fields() -> None:
    import jsonschema
    for _, node in schema_nodes(openapi_schema()):
        if "default" in node:
            filled = apply_defaults(node, node["default"])
            jsonschema.Draft4Validator(draft4(node)).validate(filled)


def test_status_has_no_server_side_defaults() -> None:
    status = openapi_schema()["properties"]["status"]
    assert not [path for path, node in schema_nodes(status) if "default" in node]


def test_schema_shape_follows_the_models() -> None:
    spec = spec_schema()
    assert spec["required"] == ["userId", "tier", "broker", "account", "symbols"]
    assert [(r["rule"], r["message"], r["fieldPath"], r["reason"]) for r in model_rules(spec)] == [
        (rule.rule, rule.message, rule.field_path, rule.reason) for rule in models.CEL_RULES]
    assert spec["properties"]["risk"]["default"] == {}  # the API server fills in each risk default
    assert spec["properties"]["account"]["properties"]["login"]["format"] == "int64"
    trading = spec["properties"]["symbols"]["properties"]["trading"]
    # A CEL rule's estimated cost is bounded only by maxItems and each string's maxLength.
    assert trading["maxItems"] == models.MAX_SYMBOLS and trading["items"]["maxLength"] == 16
    assert spec["properties"]["preferences"]["properties"]["sizingMode"]["enum"] == list(
        typing.get_args(models.SizingModeName))
    status = openapi_schema()["properties"]["status"]
    assert status["properties"]["conditions"]["items"]["required"] == ["type", "status", "reason",
                                                                       "lastTransitionTime"]
    assert status["properties"]["subjects"]["additionalProperties"] == {"type": "string"}


def test_every_symbol_list_bounds_its_strings_for_cel() -> None:
    for path, node in schema_nodes(spec_schema()):
        if node["type"] == "array" and node["items"]["type"] == "string":
            assert "maxItems" in node and "maxLength" in node["items"], path


def test_every_spec_object_refuses_unknown_fields() -> None:
    """Preserved (not pruned) so that the object's first rule sees and refuses them on every
    path; tests/test_kube_crd_validation.py shows it on the real API server."""
    import celpy

    spec = apply_defaults(spec_schema(), full_spec())
    objects = [(path, node) for path, node in schema_nodes(spec_schema(), "spec") if "properties" in node]
    assert {path for path, _ in objects} == {"spec", "spec.broker", "spec.account", "spec.account.passwordSecretRef",
                                             "spec.symbols", "spec.risk", "spec.preferences"}
    env = celpy.Environment()
    for path, node in objects:
        assert node["x-kubernetes-preserve-unknown-fields"] is True, path
        rule = node["x-kubernetes-validations"][0]
        assert rule == crd.unknown_field_rule(list(node["properties"])) and "fieldPath" not in rule, path
        assert rule["reason"] == "FieldValueForbidden" and ", ".join(node["properties"]) in rule["message"]
        value = spec
        for part in path.split(".")[1:]:
            value = value[part]
        program = env.program(env.compile(rule["rule"]))
        assert program.evaluate({"self": celpy.json_to_cel(value)}) == celpy.celtypes.BoolType(True), path
        assert program.evaluate({"self": celpy.json_to_cel({**value, "typo": 1})}) == celpy.celtypes.BoolType(False)
    status = openapi_schema()["properties"]["status"]
    assert not [path for path, node in schema_nodes(status) if "x-kubernetes-preserve-unknown-fields" in node]


# ---------------------------------------------------------------------- (c) the demo's examples


def test_examples_cover_the_demo() -> None:
    clients = example_clients()
    tiers = [client["spec"]["tier"] for client in clients]
    assert {"free", "pro", "enterprise"} <= set(tiers) and tiers.count("pro") >= 2
    assert [c["spec"]["userId"] for c in clients] == sorted(c["metadata"]["name"] for c in clients)
    assert len({c["spec"]["broker"]["server"] for c in clients}) == len(clients), "one simulated broker each"
    free = next(c for c in clients if c["spec"]["tier"] == "free")
    assert len(free["spec"]["symbols"]["trading"]) == 2
    assert any(len(c["spec"]["symbols"]["trading"]) > PRO_TRADING_PAIRS for c in clients if c["spec"]["tier"] == "pro")


def test_examples_other_objects_are_valid_kubernetes_objects() -> None:
    import kubernetes_validate
    others = [doc for doc in example_documents() if doc.get("kind") != models.KIND]
    assert {doc["kind"] for doc in others} == {"Secret"}
    for doc in others:
        kubernetes_validate.validate(doc, OLDEST_KUBERNETES, strict=True)


@pytest.mark.parametrize("client", example_clients(), ids=lambda c: c["metadata"]["name"])
def test_example_matches_a_simulated_broker_and_its_secret(client: dict[str, Any]) -> None:
    spec = client["spec"]
    (preset,) = [p for p in BROKERS.values() if p.server == spec["broker"]["server"]]
    assert spec["account"]["login"] == preset.login
    ref = spec["account"]["passwordSecretRef"]
    secrets = {doc["metadata"]["name"]: doc for doc in example_documents() if doc.get("kind") == "Secret"}
    assert secrets[ref["name"]]["stringData"][ref.get("key", "password")] == preset.password


@pytest.mark.parametrize("client", example_clients(), ids=lambda c: c["metadata"]["name"])
def test_example_is_accepted_by_the_schema_and_the_reader(validator: Any, client: dict[str, Any]) -> None:
    assert schema_paths(validator, client) == set()
    parsed = admission.parse_resource(client)
    assert parsed.name == parsed.spec.user_id == client["metadata"]["name"]
    defaulted = apply_defaults(openapi_schema(), client)
    assert schema_paths(validator, defaulted) == set()
    assert admission.parse_resource(defaulted) == parsed, "the API server's defaults differ from the reader's"


# ---------------------------------------------------------------------- (d) refused by both


def bad(spec: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    node = spec
    for part in path[:-1]:
        node = node[part]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return spec


DELETE = object()


@pytest.mark.parametrize("path,value,where", [
    (("userId",), "Alice_1", "spec.userId"),
    (("tier",), DELETE, "spec.tier"),
    (("risk", "maxLeverage"), 30, "spec.risk.maxLeverage"),
    (("risk", "maxRiskPerTrade"), -1.0, "spec.risk.maxRiskPerTrade"),
    (("risk", "maxDailyLoss"), -50, "spec.risk.maxDailyLoss"),
    (("symbols", "trading"), ["EURUSD", "eurusd"], "spec.symbols.trading[1]"),
], ids=["userId-pattern", "no-tier", "unknown-field", "negative-risk", "negative-daily-loss", "symbol-pattern"])
def test_malformed_spec_is_refused_by_schema_and_reader(validator: Any, path: tuple[Any, ...], value: Any,
                                                       where: str) -> None:
    spec = bad(full_spec(), path, value)
    assert schema_paths(validator, resource(spec)) == {where}
    assert reader_paths(spec) == {where}
    with pytest.raises(models.SpecError, match=re.escape(where) + ": "):
        admission.parse_spec(spec)


def test_a_rule_the_schema_cannot_express_is_refused_by_the_reader(validator: Any) -> None:
    spec = bad(full_spec(), ("symbols", "monitoring"), ["USDCHF", "EURUSD"])
    assert schema_paths(validator, resource(spec)) == set()  # a CEL rule: see test_cel_rules_*
    with pytest.raises(models.SpecError, match=r"spec\.symbols\.monitoring: EURUSD already traded"):
        admission.parse_spec(spec)


def wrong_type(hint: Any) -> Any:
    if hint is str or typing.get_origin(hint) is Literal:
        return 5
    if hint is bool:
        return "yes"
    if hint is int:
        return 1.5
    return "x"  # float, lists, maps, objects


def violations(cls: type, base: Mapping[str, Any],
               prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any, tuple[Any, ...]]]:
    """(where to put it, a value that breaks the models' own constraints, the field blamed),
    for every field of ``cls``; ``base`` is the valid body the value goes into."""
    yield (*prefix, "bogusField"), 1, (*prefix, "bogusField")
    hints = typing.get_type_hints(cls)
    for spec_field in dataclasses.fields(cls):
        name = models.camel(spec_field.name)
        path, hint = (*prefix, name), hints[spec_field.name]
        schema = spec_field.metadata.get("schema", {})
        if spec_field.default is dataclasses.MISSING and spec_field.default_factory is dataclasses.MISSING:
            yield path, DELETE, path
        yield path, wrong_type(hint), path
        if dataclasses.is_dataclass(hint):
            yield from violations(typing.cast(type, hint), base[name], path)
        elif typing.get_origin(hint) is Literal:
            yield path, "bogus", path
        elif typing.get_origin(hint) is tuple:
            yield from list_violations(path, schema, base[name])
        else:
            yield from value_violations(path, schema, path)
        if "maxProperties" in schema:
            yield path, {f"K{i}": "v" for i in range(schema["maxProperties"] + 1)}, path


def list_violations(path: tuple[Any, ...], schema: Mapping[str, Any],
                    current: list[Any]) -> Iterator[tuple[Any, ...]]:
    # Bad items and extra items are appended, so the list still meets the cross-field rules.
    if schema.get("minItems"):
        yield path, [], path
    if "maxItems" in schema:
        extra = [f"ZZ{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(schema["maxItems"] + 1 - len(current))]
        yield path, [*current, *extra], path
    yield path, [*current, 5], (*path, len(current))
    for _, value, _ in value_violations((), schema.get("items", {}), ()):
        yield path, [*current, value], (*path, len(current))


def value_violations(path: tuple[Any, ...], schema: Mapping[str, Any],
                     blamed: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    if "minimum" in schema:
        yield path, schema["minimum"] - (0 if schema.get("exclusiveMinimum") else 1), blamed
    if "maximum" in schema:
        yield path, schema["maximum"] + 1, blamed
    if "pattern" in schema:
        yield path, "not valid!", blamed
    if schema.get("minLength"):
        yield path, "", blamed
    if "maxLength" in schema:
        yield path, "A" * (schema["maxLength"] + 1), blamed


SPEC_VIOLATIONS = list(violations(models.TradingClientSpec, full_spec()))


@pytest.mark.parametrize("path,value,blamed", SPEC_VIOLATIONS,
                         ids=[f"{dotted(p)}={'<deleted>' if v is DELETE else repr(v)[:20]}"
                              for p, v, _ in SPEC_VIOLATIONS])
def test_every_constraint_of_the_models_is_in_the_schema_at_the_same_path(
        validator: Any, path: tuple[Any, ...], value: Any, blamed: tuple[Any, ...]) -> None:
    spec = bad(full_spec(), path, value)
    where = "spec." + dotted(blamed)
    assert reader_paths(spec) == {where}
    assert schema_paths(validator, resource(spec)) == {where}


def field_paths(cls: type, prefix: str = "") -> Iterator[str]:
    hints = typing.get_type_hints(cls)
    for spec_field in dataclasses.fields(cls):
        path = prefix + models.camel(spec_field.name)
        yield path
        if dataclasses.is_dataclass(hints[spec_field.name]):
            yield from field_paths(hints[spec_field.name], path + ".")


def test_violations_cover_every_field() -> None:
    blamed = {dotted(p) for _, _, p in SPEC_VIOLATIONS}
    assert set(field_paths(models.TradingClientSpec)) <= blamed
    assert {"symbols.trading[8]", "risk.allowedSymbols[2]", "bogusField", "risk.bogusField"} <= blamed


# ---------------------------------------------------------------------- properties: valid specs from the models


def strategy(hint: Any, schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return object_strategy(typing.cast(type, hint))
    if origin is Literal:
        return st.sampled_from(typing.get_args(hint))
    if origin is tuple:
        item = strategy(typing.get_args(hint)[0], schema.get("items", {}))
        return st.lists(item, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 8), 8))
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=min(schema["maxProperties"], 4))
    if hint is str:
        return string_strategy(schema)
    if hint is int:
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**53))
    if hint is float:
        return st.floats(schema.get("minimum"), schema.get("maximum", 1e12),
                         exclude_min=bool(schema.get("exclusiveMinimum")), allow_nan=False, allow_infinity=False)
    if hint is bool:
        return st.booleans()
    raise TypeError(f"no strategy for {hint!r}")


def string_strategy(schema: Mapping[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", 40)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: low <= len(s) <= high)
    return st.text(min_size=low, max_size=min(high, 40))


def object_strategy(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    hints = typing.get_type_hints(cls)
    required, optional = {}, {}
    for spec_field in dataclasses.fields(cls):
        value = strategy(hints[spec_field.name], spec_field.metadata.get("schema", {}))
        required_field = spec_field.default is dataclasses.MISSING and spec_field.default_factory is dataclasses.MISSING
        (required if required_field else optional)[models.camel(spec_field.name)] = value
    return st.fixed_dictionaries(required, optional=optional)


def keep_rules(spec: dict[str, Any]) -> dict[str, Any]:
    """A generated spec made to follow the cross-field rules (the CEL_RULES' meaning)."""
    symbols = spec["symbols"]
    symbols["trading"] = list(dict.fromkeys(symbols["trading"]))
    if "monitoring" in symbols:
        symbols["monitoring"] = [s for s in symbols["monitoring"] if s not in symbols["trading"]]
    allowed = spec.get("risk", {}).get("allowedSymbols")
    if allowed and not set(allowed) & set(symbols["trading"]):
        allowed[0] = symbols["trading"][0]
    return spec


VALID_SPECS = object_strategy(models.TradingClientSpec).map(keep_rules)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.filter_too_much])


@SETTINGS
@given(spec=VALID_SPECS)
def test_a_valid_spec_from_the_models_is_accepted_by_both(validator: Any, spec: dict[str, Any]) -> None:
    assert schema_paths(validator, resource(spec)) == set()
    parsed = admission.parse_spec(spec)
    defaulted = apply_defaults(spec_schema(), spec)
    assert schema_paths(validator, resource(defaulted)) == set()
    assert admission.admitted_spec(spec) == defaulted, "the reader defaults as the API server does"
    assert admission.parse_spec(defaulted) == parsed
    assert admission.parse_spec(models.to_mapping(parsed)) == parsed


# ---------------------------------------------------------------------- (e) the CEL rules


@pytest.fixture(scope="module")
def cel_rules() -> list[tuple[Any, str]]:
    import celpy
    env = celpy.Environment()
    return [(env.program(env.compile(rule.rule)), rule.message) for rule in models.CEL_RULES]


def cel_refusals(cel_rules: list[tuple[Any, str]], spec: Mapping[str, Any]) -> set[str]:
    """The messages of the rules a spec breaks, evaluated as the API server does (defaults first)."""
    import celpy

    broken = set()
    for body in (spec, apply_defaults(spec_schema(), spec)):  # holds with or without defaults
        for program, message in cel_rules:
            verdict = program.evaluate({"self": celpy.json_to_cel(body)})
            assert isinstance(verdict, celpy.celtypes.BoolType), f"{message}: {verdict!r}"
            if not verdict:
                broken.add(message)
    return broken


def reader_refusals(spec: Mapping[str, Any]) -> set[str]:
    try:
        admission.parse_spec(spec)
    except models.SpecError as error:
        return {rule.message for rule in models.CEL_RULES
                if any(p.startswith(f"spec{rule.field_path}: ") and p.endswith(rule.message) for p in error.problems)}
    return set()


@pytest.mark.parametrize("client", example_clients(), ids=lambda c: c["metadata"]["name"])
def test_cel_rules_accept_every_example(cel_rules: list[tuple[Any, str]], client: dict[str, Any]) -> None:
    assert cel_refusals(cel_rules, client["spec"]) == set()


@pytest.mark.parametrize("path,value,message", [
    (("symbols", "monitoring"), ["USDCHF", "EURUSD"], models.CEL_RULES[0].message),
    (("symbols", "trading"), ["EURUSD", "GBPUSD", "EURUSD"], models.CEL_RULES[1].message),
    (("risk", "allowedSymbols"), ["AUDCAD"], models.CEL_RULES[2].message),
], ids=["monitoring-repeats-trading", "trading-repeats", "allowed-outside-trading"])
def test_cel_rules_and_the_reader_refuse_the_same_bodies(cel_rules: list[tuple[Any, str]], path: tuple[Any, ...],
                                                         value: Any, message: str) -> None:
    spec = bad(full_spec(), path, value)
    assert cel_refusals(cel_rules, spec) == reader_refusals(spec) == {message}


SMALL_SYMBOLS = st.sampled_from(["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"])


@st.composite
def rule_bending_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Valid specs whose symbol lists overlap often: every rule gets broken, or not."""
    spec = draw(VALID_SPECS)
    spec["symbols"] = {"trading": draw(st.lists(SMALL_SYMBOLS, min_size=1, max_size=4))}
    if draw(st.booleans()):
        spec["symbols"]["monitoring"] = draw(st.lists(SMALL_SYMBOLS, min_size=1, max_size=3))
    spec.setdefault("risk", {})["allowedSymbols"] = draw(st.lists(SMALL_SYMBOLS, max_size=3))
    return spec


@SETTINGS
@given(spec=rule_bending_specs())
def test_cel_rules_say_what_they_mean_and_the_reader_applies_them(cel_rules: list[tuple[Any, str]],
                                                                   spec: dict[str, Any]) -> None:
    assert cel_refusals(cel_rules, spec) == reader_refusals(spec) == meant_refusals(spec)


def meant_refusals(spec: Mapping[str, Any]) -> set[str]:
    """The rules' meaning, in plain Python (what keep_rules repairs)."""
    trading, monitoring = spec["symbols"]["trading"], spec["symbols"].get("monitoring", [])
    allowed = spec.get("risk", {}).get("allowedSymbols", [])
    meant = {models.CEL_RULES[0].message: bool(set(monitoring) & set(trading)),
             models.CEL_RULES[1].message: len(set(trading)) != len(trading),
             models.CEL_RULES[2].message: bool(allowed) and not set(allowed) & set(trading)}
    return {message for message, broken in meant.items() if broken}


def test_every_rule_blames_a_field_of_the_schema() -> None:
    # The API server refuses a CRD whose fieldPath names no field of the schema.
    for rule in model_rules(spec_schema()):
        node = spec_schema()
        for part in rule["fieldPath"].strip(".").split("."):
            node = node["properties"][part]
        assert node["type"] == "array", rule

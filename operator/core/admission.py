"""What the API server does to a TradingClient before the operator sees it, for local mode
(YAML files in a folder, where no API server runs): the same generated CRD, the same rules.

The work is done by maintained libraries on the CRD's own schema (``crd.openapi_schema()``):
``jsonschema`` checks the ``spec`` part (Draft 4: OpenAPI v3.0 schemas, as Kubernetes'
structural schemas are, keep Draft 4's boolean ``exclusiveMinimum``) and ``cel-python``
evaluates its ``x-kubernetes-validations``. What Kubernetes adds around validation is
reproduced here, each in a few lines, because no library does it:

* structural defaulting before validation (and before CEL): ``null`` dropped from a field
  that is not nullable, then each absent field with a ``default`` gets it, inside defaults
  too (``risk: {}`` gets every risk default);
* unknown fields refused: every object that lists its properties is closed before
  jsonschema sees it, so the problem names the key (``spec.risk.maxLotSize: unknown
  field``); the API server refuses them through a rule on each object (``crd.py``:
  ``unknown_field_rule``), which cannot name the key and is not evaluated here;
* patterns matched as Go's RE2 does (``google-re2``, which cel-python uses for
  ``matches()``): Python's ``$`` would also accept a trailing newline;
* field paths as the API server names them (``spec.symbols.trading[1]``,
  ``spec.broker.symbolMap[EURUSD]``) and a CEL rule's error at its ``fieldPath``.

Each problem reads ``spec.<path>: <reason>``; the typed model is built from the checked,
defaulted body (``models.from_mapping``).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import celpy
import jsonschema
import re2
from jsonschema import ValidationError

from mt5fleet.operator.core import crd
from mt5fleet.operator.core.models import (
    KIND,
    ROTATE_SIGNING_KEY_ANNOTATION,
    SECRET_NAME_PATTERN,
    SYMBOL_PATTERN,
    TIER_PATTERN,
    USER_ID_PATTERN,
    SpecError,
    TradingClient,
    TradingClientSpec,
    TradingClientStatus,
    from_mapping,
)

# What a pattern means, for a reason a person can act on; any other pattern is quoted.
PATTERN_MEANINGS = {
    USER_ID_PATTERN: "is not a DNS label (lower-case letters, digits and '-', starting and ending with "
                     "a letter or digit)",
    SYMBOL_PATTERN: "is not a canonical symbol (like EURUSD)",
    TIER_PATTERN: "is not a tier name (lower-case letters, digits and '-', starting with a letter)",
    SECRET_NAME_PATTERN: "is not a Secret name (lower-case letters, digits, '-' and '.')",
}
_TYPE_NAMES = {"object": "an object", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false"}


def parse_resource(resource: Mapping[str, Any], *, rules: bool = True) -> TradingClient:
    meta = resource.get("metadata") or {}
    if resource.get("kind", KIND) != KIND:
        raise SpecError([f"kind: expected {KIND}, got {resource.get('kind')!r}"])
    if not meta.get("name"):
        raise SpecError(["metadata.name: missing"])
    return TradingClient(namespace=meta.get("namespace") or "default", name=meta["name"],
                         generation=int(meta.get("generation") or 1), uid=meta.get("uid", ""),
                         spec=parse_spec(resource.get("spec") or {}, rules=rules),
                         key_rotation=str((meta.get("annotations") or {}).get(ROTATE_SIGNING_KEY_ANNOTATION, "")))


def parse_spec(body: Any, *, rules: bool = True) -> TradingClientSpec:
    """The typed spec, or SpecError listing every problem as the API server would.

    ``rules=False`` skips the CEL rules, for a body the API server has already admitted
    (kopf's): it evaluated the same rules on the same defaulted object, and evaluating them
    again in cel-python would cost milliseconds per user on every resync. The schema is
    still checked (about 0.3 ms): it guards against a CRD older than this operator."""
    try:
        text = json.dumps(body, sort_keys=True, allow_nan=False, default=_mapping_view)
    except (TypeError, ValueError):  # not JSON (a YAML date, NaN): checked every time, and refused
        return from_mapping(TradingClientSpec, admitted_spec(body, rules=rules))
    return _parse_json(text, rules)


def _mapping_view(value: Any) -> Any:
    # kopf hands bodies over as read-only mapping views, not dicts.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


# cel-python interprets CEL: the rules cost milliseconds per spec (the uniqueness rule is
# quadratic in the symbols). An accepted spec is not checked again: local mode's resync and
# kopf's timers read the same specs over and over.
# Sized for a fleet: a cache smaller than the number of users would be swept empty by every
# resync, each entry is one spec (about 1 kB).
@functools.lru_cache(maxsize=32_768)
def _parse_json(text: str, rules: bool) -> TradingClientSpec:
    return from_mapping(TradingClientSpec, admitted_spec(json.loads(text), rules=rules))


def admitted_spec(body: Any, *, rules: bool = True) -> dict[str, Any]:
    """The spec as the API server would store it (defaulted), or SpecError."""
    schema = _spec_schema()
    spec = defaulted(schema, body)
    problems = list(dict.fromkeys(_problems(_spec_validator(), schema, spec, "spec")))
    if not problems and rules:  # CEL rules see only a body the schema accepts, as their types promise
        problems = list(cel_problems(schema, spec, "spec"))
    if problems:
        raise SpecError(problems)
    return spec


def parse_status(body: Mapping[str, Any] | None) -> TradingClientStatus:
    """The status a resource carries; an unreadable one counts as none (it is rewritten)."""
    # kopf's mapping view holds plain values below its top level; a non-mapping reads as none.
    status = dict(body) if isinstance(body, Mapping) else {}
    if not _status_validator().is_valid(status):
        return TradingClientStatus()
    return from_mapping(TradingClientStatus, status)


# ---------------------------------------------------------------------- the API server's steps
def defaulted(schema: Mapping[str, Any], value: Any) -> Any:
    """Structural defaulting: nulls pruned from fields that are not nullable, then the
    ``default`` of every absent field, applied inside defaults too."""
    if isinstance(value, Mapping) and "properties" in schema:
        properties = schema["properties"]
        out = {key: item for key, item in value.items()
               if not (item is None and key in properties and not properties[key].get("nullable"))}
        for name, sub in properties.items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = defaulted(sub, out[name])
        return out
    if isinstance(value, Mapping) and isinstance(schema.get("additionalProperties"), Mapping):
        return {key: defaulted(schema["additionalProperties"], item) for key, item in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [defaulted(schema["items"], item) for item in value]
    return value


def closed(schema: Any) -> Any:
    """The schema with every object that lists its properties refusing others (strict
    field validation; the API server would otherwise prune them silently)."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: closed(value) if key != "properties" else {name: closed(sub) for name, sub in value.items()}
           for key, value in schema.items()}
    if "properties" in schema:
        out["additionalProperties"] = False
    return out


def cel_problems(schema: Mapping[str, Any], value: Any, where: str) -> Iterator[str]:
    """Every ``x-kubernetes-validations`` rule of the schema that the value breaks, with
    ``self`` bound to the value at the rule's place, as the API server binds it."""
    rules = [rule for rule in schema.get("x-kubernetes-validations", ()) if not _is_unknown_field_rule(schema, rule)]
    activation = {"self": celpy.json_to_cel(value)} if rules else {}
    for rule in rules:
        verdict = _evaluate(rule["rule"], activation)
        if verdict is True:
            continue
        blamed = where + rule.get("fieldPath", "")
        if isinstance(verdict, Exception):
            yield f"{blamed}: rule {rule['rule']!r} could not be evaluated: {verdict}"
        else:
            yield f"{blamed}: {_rule_message(rule, activation)}"
    if isinstance(value, Mapping):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                yield from cel_problems(sub, value[name], f"{where}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from cel_problems(schema["items"], item, f"{where}[{index}]")


def _is_unknown_field_rule(schema: Mapping[str, Any], rule: Mapping[str, str]) -> bool:
    # The closed schema has refused unknown keys already, naming them (and cel-python would
    # spend milliseconds per object on a rule that then always holds).
    return "properties" in schema and rule == _unknown_field_rule(tuple(schema["properties"]))


@functools.cache
def _unknown_field_rule(properties: tuple[str, ...]) -> dict[str, str]:
    return crd.unknown_field_rule(properties)


def _rule_message(rule: Mapping[str, str], activation: Mapping[str, Any]) -> str:
    # messageExpression as Kubernetes treats it: an error or a blank result falls back to message.
    if rule.get("messageExpression"):
        text = _evaluate(rule["messageExpression"], activation)
        if isinstance(text, str) and text.strip() and "\n" not in text:
            return text
    return rule.get("message") or f"failed rule: {rule['rule']}"


def _evaluate(expression: str, activation: Mapping[str, Any]) -> Any:
    """The result as Python (a bool, a str), or the exception of a failed evaluation."""
    try:
        result = _program(expression).evaluate(activation)
    except celpy.CELEvalError as exc:
        return exc
    if isinstance(result, Exception):  # cel-python returns some errors instead of raising them
        return result
    if isinstance(result, celpy.celtypes.BoolType):
        return bool(result)
    return str(result) if isinstance(result, str) else TypeError(f"not a bool or a string: {result!r}")


@functools.cache
def _program(expression: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression))


# ---------------------------------------------------------------------- jsonschema
def _re2_pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern)


# The CRD's schemas are OpenAPI v3.0 (Draft 4 keywords); only the regex engine differs.
OpenApiValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _re2_pattern})


@functools.cache
def _spec_schema() -> dict[str, Any]:
    return crd.openapi_schema()["properties"]["spec"]


@functools.cache
def _spec_validator() -> Any:
    return OpenApiValidator(closed(_spec_schema()))


@functools.cache
def _status_validator() -> Any:
    return OpenApiValidator(closed(crd.openapi_schema()["properties"]["status"]))


def _problems(validator: Any, schema: Mapping[str, Any], value: Any, root: str) -> Iterator[str]:
    for error in validator.iter_errors(value):
        where = _field_path(schema, error.absolute_path, root)
        if error.validator == "required":
            for name in error.validator_value:
                if name not in error.instance:
                    yield f"{where}.{name}: required"
        elif error.validator == "additionalProperties" and error.validator_value is False:
            known = error.schema.get("properties", {})
            yield from (f"{where}.{name}: unknown field" for name in error.instance if name not in known)
        else:
            yield f"{where}: {_reason(error)}"


def _field_path(schema: Mapping[str, Any], path: Any, root: str) -> str:
    """``spec.risk.maxLot``, ``spec.symbols.trading[1]``, ``spec.broker.symbolMap[EURUSD]``."""
    text, node = root, schema
    for part in path:
        if isinstance(part, int):
            text, node = f"{text}[{part}]", node.get("items", {})
        elif part in node.get("properties", {}):
            text, node = f"{text}.{part}", node["properties"][part]
        else:
            extra = node.get("additionalProperties")
            text, node = f"{text}[{part}]", extra if isinstance(extra, Mapping) else {}
    return text


def _reason(error: ValidationError) -> str:
    keyword, limit, value, schema = error.validator, error.validator_value, error.instance, error.schema
    got = _shown(value)
    if keyword == "type":
        return f"expected {_TYPE_NAMES.get(str(limit), limit)}, got {got}"
    if keyword == "enum":
        return f"must be one of {', '.join(map(str, limit))}, got {got}"
    if keyword == "minimum":
        return f"must be {'>' if schema.get('exclusiveMinimum') else '>='} {limit}, got {got}"
    if keyword == "maximum":
        return f"must be {'<' if schema.get('exclusiveMaximum') else '<='} {limit}, got {got}"
    if keyword == "pattern":
        return f"{got} {PATTERN_MEANINGS.get(limit, f'does not match {limit}')}"
    if keyword == "minLength":
        return "must not be empty" if limit == 1 else f"must be at least {limit} characters, got {len(value)}"
    if keyword == "maxLength":
        return f"must be at most {limit} characters, got {len(value)}"
    if keyword == "minItems":
        return f"must have at least {limit} item{'s' * (limit != 1)}, got {len(value)}"
    if keyword == "maxItems":
        return f"must have at most {limit} items, got {len(value)}"
    if keyword == "maxProperties":
        return f"must have at most {limit} entries, got {len(value)}"
    return error.message


def _shown(value: Any) -> str:
    """A value as its YAML author wrote it: JSON for scalars, the kind for collections."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return json.dumps(value, default=str)

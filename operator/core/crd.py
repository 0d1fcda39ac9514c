"""The TradingClient CustomResourceDefinition, generated from the typed models.

``models.py`` is the one source of truth: its dataclasses give the schema's shape, the
constraints attached to each field (``spec_field(..., **schema)``) give the validation,
``CEL_RULES`` the cross-field rules. The chart carries the rendered YAML; a test fails
when it drifts from ``render()``. Local mode checks bodies against this same generated
schema and its rules (``admission.py``). Regenerate with::

    python -m mt5fleet.operator.core.crd --write
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from mt5fleet.operator.core import models

CRD_NAME = f"{models.PLURAL}.{models.GROUP}"
# The chart's crds/ folder: Helm installs it before any template and never templates it.
CRD_PATH = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "mt5fleet" / "crds" / f"{CRD_NAME}.yaml"
REGENERATE = "python -m mt5fleet.operator.core.crd --write"
HEADER = (f"# Generated from operator/core/models.py by mt5fleet.operator.core.crd: do not edit by hand.\n"
          f"# Regenerate: {REGENERATE}\n")

_INT32_MAX = 2**31 - 1
_SCALARS: Mapping[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}

PRINTER_COLUMNS: tuple[dict[str, str], ...] = (
    {"name": "User", "type": "string", "jsonPath": ".spec.userId"},
    {"name": "Tier", "type": "string", "jsonPath": ".spec.tier"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Connected", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="AgentConnected")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)


def build() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) as a plain mapping."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/part-of": "mt5fleet"}},
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": list(models.SHORT_NAMES),
            },
            "versions": [{
                "name": models.VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": resource_schema()},
                "subresources": {"status": {}},
                "additionalPrinterColumns": [dict(column) for column in PRINTER_COLUMNS],
            }],
        },
    }


def openapi_schema() -> dict[str, Any]:
    """The served version's ``openAPIV3Schema``, read from the CRD object itself."""
    (version,) = build()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def cel_rule(rule: models.CelRule) -> dict[str, str]:
    """A rule as ``x-kubernetes-validations`` states it (``fieldPath`` and ``reason``:
    Kubernetes 1.28+; the server's error then names ``spec.risk.allowedSymbols``, not ``spec``)."""
    entry = {"rule": rule.rule, "message": rule.message}
    if rule.message_expression:
        entry["messageExpression"] = rule.message_expression
    entry["fieldPath"] = rule.field_path
    entry["reason"] = rule.reason
    return entry


# Unknown fields. The API server prunes a field its schema does not declare, before any
# validation: refused only when the request asks for strict field validation (kubectl's
# default, and server-side apply always), with a warning on a plain API call, silently with
# ``kubectl --validate=false``; a misspelt risk limit then becomes its default. So every
# object of the spec keeps unknown fields (``x-kubernetes-preserve-unknown-fields``) and a
# rule refuses them, on every path. CEL hides undeclared fields (an object iterates over
# its declared properties only) but ``size()`` of the object as a map counts every key: more
# keys than declared properties present means an unknown one. No server mechanism can name
# that key once it is preserved, so the error names the object and lists its fields; the
# operator's reader (``admission.py``) names the key itself.
UNKNOWN_FIELD_MESSAGE = "unknown field (not one of: {fields})"
UNKNOWN_FIELD_REASON = "FieldValueForbidden"


def unknown_field_rule(properties: Sequence[str]) -> dict[str, str]:
    """The rule refusing any key of an object but ``properties`` (preserved, see above)."""
    present = ", ".join(f"has(self.{name})" for name in properties)
    return {"rule": f"dyn(self).size() == [{present}].filter(known, known).size()",
            "message": UNKNOWN_FIELD_MESSAGE.format(fields=", ".join(properties)),
            "reason": UNKNOWN_FIELD_REASON}


def refusing_unknown_fields(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with every object that lists its properties refusing other keys on every
    path (see ``unknown_field_rule``), its own rules after that one."""
    out = dict(schema)
    if isinstance(schema.get("items"), Mapping):
        out["items"] = refusing_unknown_fields(schema["items"])
    if isinstance(schema.get("additionalProperties"), Mapping):
        out["additionalProperties"] = refusing_unknown_fields(schema["additionalProperties"])
    if "properties" in schema:
        out["properties"] = {name: refusing_unknown_fields(sub) for name, sub in schema["properties"].items()}
        rules = [unknown_field_rule(list(schema["properties"])), *schema.get("x-kubernetes-validations", ())]
        out.pop("x-kubernetes-validations", None)
        out["x-kubernetes-preserve-unknown-fields"] = True
        out["x-kubernetes-validations"] = rules
    return out


def resource_schema() -> dict[str, Any]:
    """The whole object's schema: apiVersion/kind/metadata as every resource has them."""
    spec = refusing_unknown_fields({
        "description": "what the user's trading client should be",
        **object_schema(models.TradingClientSpec, defaults=True),
        "x-kubernetes-validations": [cel_rule(rule) for rule in models.CEL_RULES],
    })
    # Status is the operator's to write: no server-side defaults, which would report a
    # phase or generation the operator never set.
    status = {"description": "what the operator observed and provisioned",
              **object_schema(models.TradingClientStatus, defaults=False)}
    return {
        "description": f"{models.KIND}: one user's MT5 trading client, reconciled by the mt5fleet operator",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }


def object_schema(cls: type, *, defaults: bool) -> dict[str, Any]:
    """A dataclass as an object schema: its fields as camelCase properties."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {models.camel(f.name): field_schema(f, hints[f.name], defaults) for f in fields},
    }
    required = [models.camel(f.name) for f in fields if not _has_default(f)]
    if required:
        schema["required"] = required
    return schema


def field_schema(spec_field: dataclasses.Field[Any], hint: Any, defaults: bool) -> dict[str, Any]:
    constraints = dict(spec_field.metadata.get("schema", {}))
    item_constraints = constraints.pop("items", {})
    schema: dict[str, Any] = {"description": spec_field.metadata["description"]}
    schema.update(type_schema(hint, defaults, item_constraints))
    if defaults and _has_default(spec_field):
        schema["default"] = _default(spec_field)
    schema.update(constraints)
    if schema.get("type") == "integer" and _needs_int64(schema):
        schema["format"] = "int64"
    return _ordered(schema)


def type_schema(hint: Any, defaults: bool, item_constraints: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The schema a Python type maps to; ``item_constraints`` refine a list's items."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return object_schema(typing.cast(type, hint), defaults=defaults)
    if origin is Literal:
        if not all(isinstance(arg, str) for arg in args):
            raise TypeError(f"only string Literals map to an enum: {hint!r}")
        return {"type": "string", "enum": list(args)}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": _ordered({**type_schema(args[0], defaults), **(item_constraints or {})})}
    if origin is dict and args == (str, str):
        return {"type": "object", "additionalProperties": {"type": "string"}}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    raise TypeError(f"no schema for model type {hint!r}")


def _has_default(spec_field: dataclasses.Field[Any]) -> bool:
    return spec_field.default is not dataclasses.MISSING or spec_field.default_factory is not dataclasses.MISSING


def _default(spec_field: dataclasses.Field[Any]) -> Any:
    if spec_field.default is not dataclasses.MISSING:
        return models.to_mapping(spec_field.default)
    value = spec_field.default_factory()  # type: ignore[misc]
    # A nested object defaults to {}: the API server then fills in each of its own
    # defaults, so every default is stated once, on its own field.
    return {} if dataclasses.is_dataclass(value) else models.to_mapping(value)


def _needs_int64(schema: Mapping[str, Any]) -> bool:
    # Generated clients read an integer without a format as int32.
    return schema.get("maximum") is None or schema["maximum"] > _INT32_MAX


# Readers look for the description first and the structure last.
_KEY_ORDER = ("description", "type", "format", "enum", "default")
_TAIL_ORDER = ("items", "properties", "required", "additionalProperties")


def _ordered(schema: Mapping[str, Any]) -> dict[str, Any]:
    head = [key for key in _KEY_ORDER if key in schema]
    tail = [key for key in _TAIL_ORDER if key in schema]
    middle = [key for key in schema if key not in head and key not in tail]
    return {key: schema[key] for key in (*head, *middle, *tail)}


class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, as kubectl and most linters write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def render() -> str:
    """The CRD as YAML, keys in the order built, each string on one line."""
    body = yaml.dump(build(), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1_000_000)
    return HEADER + body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mt5fleet.operator.core.crd",
                                     description="Print the TradingClient CRD, or write it into the chart.")
    parser.add_argument("--write", action="store_true", help=f"write {CRD_PATH.name} into the chart's crds/ folder")
    args = parser.parse_args(argv)
    text = render()
    if not args.write:
        sys.stdout.write(text)
        return 0
    checkout = CRD_PATH.parents[4]
    if not (checkout / "pyproject.toml").is_file():  # an installed wheel has no chart to write into
        print(f"{checkout} is not a checkout of mt5fleet: run from one (pip install -e .)", file=sys.stderr)
        return 1
    CRD_PATH.parent.mkdir(parents=True, exist_ok=True)
    CRD_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {CRD_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The TaskQueue CRD as the API server will read it: no key YAML turned into a null, a type on every property, and
printer columns that point at fields the schema declares. An unquoted comma in a flow mapping once split a
description into a bogus ``comma-separated (for the printer column)`` property the API server warned about on every
install; these checks catch the whole class of mistake, not that one line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "deploy" / "crds" / "taskqueue.yaml"
#: The JSONSchemaProps fields the API server knows (apiextensions/v1); any other key is dropped with a warning.
SCHEMA_KEYWORDS = frozenset({
    "type", "format", "description", "default", "enum", "nullable", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "minItems", "maxItems",
    "uniqueItems", "minProperties", "maxProperties", "required", "items", "properties", "additionalProperties",
    "allOf", "anyOf", "oneOf", "not", "title", "example", "externalDocs", "x-kubernetes-validations",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
})
#: Schema keywords that stand in for ``type`` (structural schemas allow these instead of a type).
TYPELESS_OK = ("x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")


def _crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    return loaded


def _versions() -> list[dict[str, Any]]:
    versions: list[dict[str, Any]] = _crd()["spec"]["versions"]
    return versions


def _nulls(node: object, path: str) -> Iterator[str]:
    if node is None:
        yield path
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _nulls(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _nulls(value, f"{path}[{index}]")


def _properties(schema: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    """Every property schema under ``schema`` (object properties and array items), with its dotted path."""
    for name, prop in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", prop
        if isinstance(prop, dict):
            yield from _properties(prop, f"{path}.{name}")
            if isinstance(prop.get("items"), dict):
                yield from _properties(prop["items"], f"{path}.{name}[]")


def test_no_key_of_the_crd_has_a_null_value() -> None:
    assert list(_nulls(_crd(), "")) == [], "a null usually means YAML split a value (quote commas and colons)"


@pytest.mark.parametrize("version", [v["name"] for v in _versions()])
def test_every_schema_property_is_a_mapping_with_a_type(version: str) -> None:
    schema = next(v for v in _versions() if v["name"] == version)["schema"]["openAPIV3Schema"]

    untyped = [path for path, prop in _properties(schema, "")
               if not isinstance(prop, dict) or not ("type" in prop or any(k in prop for k in TYPELESS_OK))]

    assert untyped == []


@pytest.mark.parametrize("version", [v["name"] for v in _versions()])
def test_every_schema_property_uses_only_keywords_the_api_server_knows(version: str) -> None:
    schema = next(v for v in _versions() if v["name"] == version)["schema"]["openAPIV3Schema"]

    unknown = [f"{path}: {key}" for path, prop in _properties(schema, "") if isinstance(prop, dict)
               for key in prop if key not in SCHEMA_KEYWORDS]

    assert unknown == [], "the API server would warn `unknown field` and drop these"


@pytest.mark.parametrize("version", [v["name"] for v in _versions()])
def test_every_printer_column_reads_a_declared_field(version: str) -> None:
    served = next(v for v in _versions() if v["name"] == version)
    declared = {path for path, _ in _properties(served["schema"]["openAPIV3Schema"], "")}
    declared |= {".metadata.creationTimestamp"}

    missing = []
    for column in served["additionalPrinterColumns"]:
        # `.status.conditions[?(@.type=='Scaling')].reason` is the field `.status.conditions[].reason`
        field = re.sub(r"\[\?\(.*?\)\]", "[]", column["jsonPath"])
        if field not in declared:
            missing.append((column["name"], column["jsonPath"]))

    assert missing == []

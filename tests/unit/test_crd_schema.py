"""The generated CRD is a structural schema Kubernetes accepts (the cluster tier proves it for real)."""

from typing import Any

import pytest

from access_hygiene.models.crd import build_crd, spec_schema

pytestmark = pytest.mark.unit


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += walk(value, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            found += walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural() -> None:
    for path, node in walk(spec_schema(), "spec"):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs"} & node.keys(), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path


def test_every_list_and_string_is_bounded_for_cel_cost() -> None:
    for path, node in walk(spec_schema(), "spec"):
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path} needs maxItems"


def test_crd_names_and_columns() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "accesspolicies.accesshygiene.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["shortNames"], crd["spec"]["scope"]) == (
        "AccessPolicy",
        ["ap"],
        "Namespaced",
    )
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Ready", "Mode", "ServiceAccount", "Violations", "Age"]

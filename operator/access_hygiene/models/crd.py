"""Generates the AccessPolicy CustomResourceDefinition from the pydantic models.

Pydantic's JSON schema is not a structural schema: $refs are inlined, titles dropped,
Optional[X] becomes X (absence is how Kubernetes says "unset"), and defaults that depend
on metadata are left to the operator.
"""

from typing import Any

from access_hygiene import API_GROUP, API_VERSION
from access_hygiene.models.policy import AccessPolicySpec
from access_hygiene.models.status import AccessPolicyStatus

PLURAL = "accesspolicies"
KIND = "AccessPolicy"
CRD_NAME = f"{PLURAL}.{API_GROUP}"


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    any_of = node.get("anyOf")
    if any_of is not None:
        branches = [b for b in any_of if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
        if node.get("x-kubernetes-int-or-string"):
            return _structural({**rest, "x-kubernetes-int-or-string": True}, defs)
        if len(branches) == 1:
            return _structural({**branches[0], **rest}, defs)
        raise ValueError(f"cannot express anyOf {any_of!r} in a structural schema")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        # Structural schemas forbid properties beside additionalProperties; pruning drops unknown fields.
        if key == "additionalProperties" and value is False:
            continue
        if key == "default" and (value is None or (value == {} and node.get("type") == "object")):
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        else:
            out[key] = _structural(value, defs) if isinstance(value, (dict, list)) else value
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    return out


def _schema_of(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return dict(_structural(raw, defs))


def spec_schema() -> dict[str, Any]:
    return _schema_of(AccessPolicySpec)


def build_crd() -> dict[str, Any]:
    spec = spec_schema()
    spec["description"] = AccessPolicySpec.__doc__
    status = _schema_of(AccessPolicyStatus)
    status["description"] = "Observed state, written by the operator."
    columns = [
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Mode", "type": "string", "jsonPath": ".status.mode"},
        {"name": "ServiceAccount", "type": "string", "jsonPath": ".status.serviceAccount"},
        {"name": "Violations", "type": "integer", "jsonPath": ".status.violations"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "access-hygiene",
                "app.kubernetes.io/part-of": "access-hygiene",
            },
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": "accesspolicy",
                "shortNames": ["ap"],
                "categories": ["access-hygiene"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Declares what one application may access; the operator "
                            "generates its ServiceAccount, Role/RoleBinding and NetworkPolicies.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    import yaml  # local: models stay import-light for the operator hot path

    header = "# Generated from access_hygiene.models by `access-hygiene crd`. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)

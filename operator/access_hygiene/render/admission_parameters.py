"""The admission parameters as a custom resource: the CRD (kind AdmissionParameterSet, cluster-scoped) and the one
object the operator keeps, which every rule policy and the ceiling guard name as their paramKind / paramRef.

Why a custom resource (docs/admission.md, "Parameters"): kube-apiserver reads a binding's parameter object from
its param informer on every request, so a parameter change takes effect one watch event after the write, with no
policy recompile (policy objects are recompiled at most once per second, `policyRefreshIntervalDefault`). A
built-in paramKind (a ConfigMap) is not usable: its informer comes from a shared factory and is stopped for good
once no binding names the kind (kubernetes/kubernetes#130887); a custom kind gets a fresh dynamic informer each
time. Pure: plain manifest dicts out.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from access_hygiene import API_GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE

PARAMETERS_VERSION = "v1alpha1"
PARAMETERS_API_VERSION = f"{API_GROUP}/{PARAMETERS_VERSION}"
PARAMETERS_KIND = "AdmissionParameterSet"
PARAMETERS_PLURAL = "admissionparametersets"
PARAMETERS_CRD_NAME = f"{PARAMETERS_PLURAL}.{API_GROUP}"
# The one parameter object (cluster-scoped; the chart's release name plays no part: one operator per cluster).
PARAMETERS_NAME = "access-hygiene"
Obj = dict[str, Any]

_STRINGS = {"type": "array", "items": {"type": "string"}}
_EXEMPTION = {
    "type": "object",
    "required": ["rules", "until"],
    "properties": {
        "rules": {"type": "string", "description": "Comma-separated rule ids (or *) the exemption covers."},
        "until": {"type": "string", "description": "RFC 3339 instant (UTC, whole seconds) the exemption ends."},
    },
}
_CEILING_RULE = {
    "type": "object",
    "required": ["apiGroups", "resources", "verbs", "resourceNames"],
    "properties": dict.fromkeys(("apiGroups", "resources", "verbs", "resourceNames"), _STRINGS),
}


def parameters_crd() -> Obj:
    """The CustomResourceDefinition of the parameter object (written only by the operator; read by kube-apiserver
    at admission)."""
    spec_schema = {
        "type": "object",
        "required": ["floor"],
        "properties": {
            "floor": {
                "type": "string",
                "description": 'The floor of admission\'s "now": the latest exemption expiry that has passed.',
            },
            "ownerExemptions": {
                "type": "object",
                "description": "Kind.namespace.name of an exempted owner (or an object it owns) -> its exemptions.",
                "additionalProperties": {"type": "array", "items": _EXEMPTION},
            },
            "ceiling": {
                "type": "array",
                "description": "The grant ceiling ClusterRole's resource rules.",
                "items": _CEILING_RULE,
            },
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": PARAMETERS_CRD_NAME, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
        "spec": {
            "group": API_GROUP,
            "scope": "Cluster",
            "names": {
                "kind": PARAMETERS_KIND,
                "listKind": f"{PARAMETERS_KIND}List",
                "plural": PARAMETERS_PLURAL,
                "singular": PARAMETERS_KIND.lower(),
                "categories": ["access-hygiene"],
            },
            "versions": [
                {
                    "name": PARAMETERS_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "The parameters of access-hygiene's admission policies, kept by the "
                            "operator (do not edit: it rewrites them from the cluster's state).",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def param_kind() -> Obj:
    """A policy's spec.paramKind."""
    return {"apiVersion": PARAMETERS_API_VERSION, "kind": PARAMETERS_KIND}


def param_ref(enforcing: bool) -> Obj:
    """A binding's spec.paramRef. A missing parameter object fails closed where the binding denies (the request is
    refused) and is skipped where it only warns (audit mode never refuses)."""
    return {"name": PARAMETERS_NAME, "parameterNotFoundAction": "Deny" if enforcing else "Allow"}


def render_parameters(
    floor: str,
    owner_exemptions: Mapping[str, Sequence[Mapping[str, str]]],
    ceiling: Sequence[Mapping[str, Sequence[str]]],
    metadata: Mapping[str, Any],
) -> Obj:
    """The parameter object: floor (RFC 3339), owner exemptions, ceiling rules (every key present). An empty
    map or list is left out (the policies read an absent one as empty): server-side apply stores an applied `{}`
    that replaces a filled one as null, which the schema refuses."""
    spec: Obj = {"floor": floor}
    if owner_exemptions:
        spec["ownerExemptions"] = {k: [dict(e) for e in v] for k, v in sorted(owner_exemptions.items())}
    if ceiling:
        spec["ceiling"] = [{k: list(v) for k, v in rule.items()} for rule in ceiling]
    return {
        "apiVersion": PARAMETERS_API_VERSION,
        "kind": PARAMETERS_KIND,
        "metadata": {**metadata, "name": PARAMETERS_NAME},
        "spec": spec,
    }

"""Audit events shaped like kube-apiserver's (audit.k8s.io/v1, Metadata level), for the usage tests."""

import json
from typing import Any

SA = "system:serviceaccount:shop:orders-api"


def event(
    verb: str,
    resource: str = "",
    *,
    namespace: str = "shop",
    name: str = "",
    group: str = "",
    subresource: str = "",
    user: str = SA,
    allowed: bool = True,
    code: int | None = None,
    stage: str = "ResponseComplete",
    at: str = "2026-11-20T10:00:00.000000Z",
    uri: str = "",
    decision: bool = True,
) -> dict[str, Any]:
    """One event; resource="" makes a non-resource request on `uri`."""
    body: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": "0b5c6f0e-2f3c-4d7e-9a51-7d1c2a0b9e11",
        "stage": stage,
        "requestURI": uri or f"/api/v1/namespaces/{namespace}/{resource}",
        "verb": verb,
        "user": {"username": user, "groups": ["system:serviceaccounts", "system:authenticated"]},
        "sourceIPs": ["127.0.0.1"],
        "userAgent": "OpenAPI-Generator/37.0.0/python",
        "responseStatus": {"metadata": {}, "code": code if code is not None else (200 if allowed else 403)},
        "requestReceivedTimestamp": at,
        "stageTimestamp": at,
    }
    if resource:
        ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1"}
        if namespace:
            ref["namespace"] = namespace
        if name:
            ref["name"] = name
        if group:
            ref["apiGroup"] = group
        if subresource:
            ref["subresource"] = subresource
        body["objectRef"] = ref
    if decision:
        body["annotations"] = {"authorization.k8s.io/decision": "allow" if allowed else "forbid"}
    return body


def lines(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)

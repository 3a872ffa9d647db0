"""The RoleBinding a just-in-time grant writes: owned by its AccessRequest, labelled, named after it."""

from typing import Any

from access_hygiene import API_GROUP, API_VERSION, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.models.access import RoleRef, split_service_account
from access_hygiene.render.names import label_value, object_name

ACCESS_REQUEST_LABEL = f"{API_GROUP}/access-request"
EXPIRES_ANNOTATION = f"{API_GROUP}/expires-at"
BINDING_PREFIX = "ah-jit"
RBAC_GROUP = "rbac.authorization.k8s.io"


def grant_binding_name(request_name: str) -> str:
    return object_name(BINDING_PREFIX, request_name)


def binding_subject(username: str) -> dict[str, str]:
    """The RBAC subject the API server authorizes `username` as (a ServiceAccount's username names one)."""
    service_account = split_service_account(username)
    if service_account is not None:
        namespace, name = service_account
        return {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    return {"kind": "User", "apiGroup": RBAC_GROUP, "name": username}


def render_grant_binding(
    *, request_name: str, namespace: str, request_uid: str, username: str, role: RoleRef, expires_at: str
) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": grant_binding_name(request_name),
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, ACCESS_REQUEST_LABEL: label_value(request_name)},
            "annotations": {EXPIRES_ANNOTATION: expires_at},
            "ownerReferences": [
                {
                    "apiVersion": f"{API_GROUP}/{API_VERSION}",
                    "kind": "AccessRequest",
                    "name": request_name,
                    "uid": request_uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": role.kind, "name": role.name},
        "subjects": [binding_subject(username)],
    }

"""The default grant ceiling: the most any AccessPolicy may grant unless the operator is configured wider.

Shipped as a ClusterRole bound to the operator, so Kubernetes' own RBAC escalation check enforces
the same bound the operator checks before writing.
"""

from typing import Any

from access_hygiene import MANAGED_BY_LABEL, MANAGED_BY_VALUE

READ = ["get", "list", "watch"]
DEFAULT_GRANT_CEILING_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": [
            "configmaps",
            "endpoints",
            "persistentvolumeclaims",
            "pods",
            "pods/log",
            "services",
            "events",
        ],
        "verbs": READ,
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": [*READ, "create", "patch"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"],
        "verbs": READ,
    },
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": READ},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": [*READ, "create", "update", "patch"],
    },
]


def render_grant_ceiling_role(name: str, rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
        "rules": rules if rules is not None else DEFAULT_GRANT_CEILING_RULES,
    }

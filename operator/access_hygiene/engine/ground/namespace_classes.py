"""Namespace classes: a small, fixed vocabulary that aggregated metrics use instead of namespace names.

privileged: in ctx.privileged_namespaces (severities are raised there). exempt: governed by nothing, by the
operator's configuration (name list or label selector). Every other namespace is "other", and cluster-scoped
objects are "cluster". A namespace both privileged and exempt (kube-system by default) is "privileged".
"""

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.exemptions import namespace_exempt_by_config
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, name_of

CLUSTER = "cluster"
PRIVILEGED = "privileged"
EXEMPT = "exempt"
OTHER = "other"
NAMESPACE_CLASSES = (CLUSTER, PRIVILEGED, EXEMPT, OTHER)


def namespace_classes(snapshot: ClusterSnapshot, ctx: AuditContext) -> dict[str, str]:
    """namespace -> "privileged" | "exempt" for the namespaces that are either; absent ones are "other"."""
    classes: dict[str, str] = {}
    for namespace in snapshot.namespaces:
        name = name_of(namespace)
        if name in ctx.privileged_namespaces:
            classes[name] = PRIVILEGED
        elif namespace_exempt_by_config(namespace, ctx):
            classes[name] = EXEMPT
    return classes

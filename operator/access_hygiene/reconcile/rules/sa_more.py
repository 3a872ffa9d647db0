"""ServiceAccount rules AH-SA-009 and AH-SA-010: legacy token lists and ServiceAccounts that do not exist."""

from collections.abc import Iterator

from access_hygiene.models.findings import Finding, ObjectRef, Severity, Subject
from access_hygiene.reconcile.namespaces import exempt_by_config, hygiene_index, severity_for, workloads_of
from access_hygiene.reconcile.rules import AuditContext, rule
from access_hygiene.reconcile.snapshot import ClusterSnapshot, Obj, annotations_of, name_of, namespace_of

LEGACY_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"


def _token_secret_names(snapshot: ClusterSnapshot) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(token Secrets, other Secrets) the snapshot knows, as (namespace, name)."""
    tokens: set[tuple[str, str]] = set()
    others: set[tuple[str, str]] = set()
    for secret in snapshot.secrets:
        kind = secret.get("type")
        is_token = kind == LEGACY_TOKEN_TYPE or (kind is None and SA_NAME_ANNOTATION in annotations_of(secret))
        (tokens if is_token else others).add((namespace_of(secret), name_of(secret)))
    return tokens, others


def _generated_token_name(secret: str, service_account: str) -> bool:
    """<serviceaccount>-token-xxxxx: the name the legacy token controller generated."""
    prefix = f"{service_account}-token-"
    suffix = secret[len(prefix) :]
    return secret.startswith(prefix) and len(suffix) == 5 and suffix.isalnum() and suffix.islower()


def _listed_secrets(sa: Obj) -> list[str]:
    return [str(entry["name"]) for entry in sa.get("secrets") or [] if isinstance(entry, dict) and entry.get("name")]


@rule("AH-SA-009", Severity.MEDIUM, "ServiceAccount lists legacy token Secrets")
def legacy_secrets_list(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A ServiceAccount's `secrets:` list names token Secrets (type kubernetes.io/service-account-token when
    the scan holds the Secret, else a name of the form <serviceaccount>-token-xxxxx the legacy token
    controller generated): long-lived, non-expiring credentials for the ServiceAccount exist or existed.
    Reported from the ServiceAccount alone, so it works without listing Secrets (AH-SA-005)."""
    tokens, others = _token_secret_names(snapshot)
    for sa in snapshot.service_accounts:
        listed = _listed_secrets(sa)
        if not listed:
            continue
        namespace, name = namespace_of(sa), name_of(sa)
        named = [
            secret
            for secret in listed
            if (namespace, secret) in tokens
            or ((namespace, secret) not in others and _generated_token_name(secret, name))
        ]
        if not named:
            continue
        yield Finding(
            rule_id="AH-SA-009",
            severity=severity_for("AH-SA-009", namespace, ctx),
            namespace=namespace,
            object=ObjectRef(kind="ServiceAccount", name=name, namespace=namespace, api_version="v1"),
            subject=Subject(kind="ServiceAccount", name=name, namespace=namespace),
            message=f"ServiceAccount {name} lists legacy token Secret(s) {', '.join(sorted(named))}: "
            "non-expiring credentials; move consumers to TokenRequest and delete them",
        )


@rule("AH-SA-010", Severity.MEDIUM, "Workload names a ServiceAccount that does not exist")
def missing_service_account(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A workload names a ServiceAccount that is not in its namespace, while the scan holds that namespace's
    ServiceAccounts (at least one): its pods cannot be created, and whoever creates a ServiceAccount of that
    name decides what the pods may do. `default` is skipped (the controller creates it); namespaces whose
    ServiceAccounts the scan does not hold cannot be judged and are skipped too."""
    known = hygiene_index(snapshot, ctx).service_accounts
    namespaces_known = {namespace for namespace, _ in known}
    for workload in workloads_of(snapshot, ctx):
        namespace, sa_name = workload.namespace, workload.service_account
        if sa_name == "default" or namespace not in namespaces_known or (namespace, sa_name) in known:
            continue
        if exempt_by_config(snapshot, ctx, namespace):
            continue
        yield Finding(
            rule_id="AH-SA-010",
            severity=severity_for("AH-SA-010", namespace, ctx),
            namespace=namespace,
            object=workload.ref,
            subject=Subject(kind="ServiceAccount", name=sa_name, namespace=namespace),
            message=f"{workload.describe()} runs as ServiceAccount {sa_name}, which does not exist in {namespace}: "
            "its pods cannot start, and whoever creates it chooses their permissions",
        )

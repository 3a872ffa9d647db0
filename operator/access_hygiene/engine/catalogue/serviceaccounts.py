"""ServiceAccount rules AH-SA-001..010: tokens mounted where nothing needs them, shared and default
identities, legacy long-lived tokens, legacy token lists and ServiceAccounts that do not exist.

Namespaces exempted by the operator's configuration are skipped, except by AH-SA-005 (a long-lived
credential) and AH-SA-006 (an RBAC grant), which still report there. Rules that judge "has no RBAC
bindings" (AH-SA-002, AH-SA-007) say so more carefully when the snapshot holds no bindings at all (an
app's manifest set: the binding may live elsewhere).
"""

from collections.abc import Iterator
from datetime import UTC, date, datetime

from access_hygiene.clock import describe_age, parse_instant
from access_hygiene.engine.catalogue.governance import managed_service_accounts
from access_hygiene.engine.catalogue.registry import rule, severity_for
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.exemptions import exempt_by_config
from access_hygiene.engine.ground.snapshot import (
    ClusterSnapshot,
    Obj,
    annotations_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
)
from access_hygiene.engine.ground.workloads import (
    Workload,
    hygiene_index,
    service_account_of,
    token_mounted,
    workloads_of,
)
from access_hygiene.engine.rbac.permissions import is_excluded, permission_index
from access_hygiene.models.findings import Finding, ObjectRef, Severity, Subject

LEGACY_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
LAST_USED_LABEL = "kubernetes.io/legacy-token-last-used"
INVALID_SINCE_LABEL = "kubernetes.io/legacy-token-invalid-since"
APP_LABELS = ("app.kubernetes.io/name", "app")


def _sa_ref(namespace: str, name: str) -> ObjectRef:
    return ObjectRef.trusted("ServiceAccount", name, namespace, "v1")


def _governed(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Workload]:
    exempt: dict[str, bool] = {}
    for workload in workloads_of(snapshot, ctx):
        if workload.namespace not in exempt:
            exempt[workload.namespace] = exempt_by_config(snapshot, ctx, workload.namespace)
        if not exempt[workload.namespace]:
            yield workload


# Said instead of "has no RBAC bindings" when the scan holds no bindings at all (an app's manifests).
_UNBOUND_IN_SCAN = "is named by no binding in the scanned objects (if none elsewhere binds it, its token is unused)"


def _has_bindings(snapshot: ClusterSnapshot) -> bool:
    return bool(snapshot.role_bindings or snapshot.cluster_role_bindings)


def _finding(rule_id: str, ctx: AuditContext, ref: ObjectRef, message: str, subject: Subject | None = None) -> Finding:
    return Finding.trusted(rule_id, severity_for(rule_id, ref.namespace, ctx), ref.namespace, ref, message, subject)


@rule("AH-SA-001", Severity.MEDIUM, "Default ServiceAccount mounts an API token")
def default_sa_automount(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """The namespace's `default` ServiceAccount does not set automountServiceAccountToken: false, so
    every pod that does not name a ServiceAccount gets an API token it almost never needs."""
    for sa in snapshot.service_accounts:
        namespace = namespace_of(sa)
        if name_of(sa) != "default" or exempt_by_config(snapshot, ctx, namespace):
            continue
        if sa.get("automountServiceAccountToken") is not False:
            setting = sa.get("automountServiceAccountToken")
            state = "unset (defaults to true)" if setting is None else str(setting).lower()
            yield _finding(
                "AH-SA-001",
                ctx,
                _sa_ref(namespace, "default"),
                f"ServiceAccount default in {namespace} has automountServiceAccountToken {state}",
            )


@rule("AH-SA-002", Severity.LOW, "Pod mounts a token its ServiceAccount has no permissions for")
def unused_token(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Pods mount an API token for a ServiceAccount that no RoleBinding/ClusterRoleBinding names:
    the token is likely unused, yet anyone who compromises the pod gets it. (Pods running as
    `default` are reported by AH-SA-003 instead.)"""
    partial = not _has_bindings(snapshot)
    for workload in _governed(snapshot, ctx):
        sa_name = workload.service_account
        if sa_name == "default":
            continue
        if not token_mounted(workload, service_account_of(snapshot, ctx, workload.namespace, sa_name)):
            continue
        if not permission_index(snapshot, ctx).service_account_bound(workload.namespace, sa_name):
            yield _finding(
                "AH-SA-002",
                ctx,
                workload.ref,
                f"{workload.describe()} mounts a token for ServiceAccount {sa_name}, which "
                + (_UNBOUND_IN_SCAN if partial else "has no RBAC bindings")
                + "; set automountServiceAccountToken: false",
            )


@rule("AH-SA-003", Severity.MEDIUM, "Workload runs as the default ServiceAccount with a token")
def default_sa_token(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A pod or workload uses the namespace's `default` ServiceAccount and mounts its token: every
    such app shares one identity, and any permission granted to it leaks to all of them."""
    for workload in _governed(snapshot, ctx):
        if workload.service_account != "default":
            continue
        if token_mounted(workload, service_account_of(snapshot, ctx, workload.namespace, "default")):
            yield _finding(
                "AH-SA-003",
                ctx,
                workload.ref,
                f"{workload.describe()} runs as ServiceAccount default with an API token mounted",
            )


def _app_of(workload: Workload) -> str:
    for label in APP_LABELS:
        if workload.labels.get(label):
            return workload.labels[label]
    return f"{workload.ref.kind}/{workload.ref.name}"


@rule("AH-SA-004", Severity.MEDIUM, "ServiceAccount shared by several apps")
def shared_service_account(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Pods of different apps (distinct app.kubernetes.io/name or app labels; unlabelled workloads
    count as their own app) use one ServiceAccount: none of them can get least privilege."""
    apps: dict[tuple[str, str], set[str]] = {}
    for workload in _governed(snapshot, ctx):
        if workload.service_account != "default":  # sharing `default` is AH-SA-003's business
            apps.setdefault((workload.namespace, workload.service_account), set()).add(_app_of(workload))
    for (namespace, sa_name), names in sorted(apps.items()):
        if len(names) > 1:
            yield _finding(
                "AH-SA-004",
                ctx,
                _sa_ref(namespace, sa_name),
                f"ServiceAccount {sa_name} is used by {len(names)} apps: {', '.join(sorted(names))}",
            )


def _is_legacy_token(secret: Obj) -> bool:
    # Metadata-only listings carry no `type`; the SA-name annotation marks token Secrets as well.
    kind = secret.get("type")
    return kind == LEGACY_TOKEN_TYPE or (kind is None and SA_NAME_ANNOTATION in annotations_of(secret))


def _parse_day(text: str) -> date | None:
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _created(obj: Obj) -> datetime | date | None:
    stamp = meta(obj).get("creationTimestamp")
    if isinstance(stamp, datetime):
        return stamp
    if not stamp:
        return None
    try:
        return parse_instant(str(stamp))
    except ValueError:
        return _parse_day(str(stamp))


@rule("AH-SA-005", Severity.MEDIUM, "Legacy long-lived ServiceAccount token Secret")
def legacy_tokens(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A `kubernetes.io/service-account-token` Secret: a token that never expires. Reported with
    its age and last use (label kubernetes.io/legacy-token-last-used). Needs the opt-in to list
    Secret metadata (the operator never reads Secret data)."""
    today = ctx.now.astimezone(UTC).date()
    for secret in snapshot.secrets:
        if not _is_legacy_token(secret):
            continue
        namespace = namespace_of(secret)
        sa_name = annotations_of(secret).get(SA_NAME_ANNOTATION, "?")
        age = describe_age("created", _created(secret), ctx.now)
        labels = labels_of(secret)
        last_used = _parse_day(labels.get(LAST_USED_LABEL, ""))
        used = f"last used {last_used.isoformat()}" if last_used else "no recorded use"
        if last_used is not None and last_used > today:
            used += " (a day in the future: clock skew?)"
        invalid = f", invalidated since {labels[INVALID_SINCE_LABEL]}" if INVALID_SINCE_LABEL in labels else ""
        yield _finding(
            "AH-SA-005",
            ctx,
            ObjectRef(kind="Secret", name=name_of(secret), namespace=namespace, api_version="v1"),
            f"Secret {name_of(secret)} holds a non-expiring token for ServiceAccount {sa_name} "
            f"({age}, {used}{invalid})",
            Subject(kind="ServiceAccount", name=sa_name, namespace=namespace),
        )


@rule("AH-SA-006", Severity.MEDIUM, "Default ServiceAccount is granted a role")
def default_sa_bound(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A RoleBinding/ClusterRoleBinding names a namespace's `default` ServiceAccount: every pod that
    does not choose a ServiceAccount inherits the role. Bind a dedicated ServiceAccount instead."""
    for binding in permission_index(snapshot, ctx).bindings:
        if binding.bootstrap:
            continue
        for subject in binding.subjects:
            if subject.kind != "ServiceAccount" or subject.name != "default" or is_excluded(subject, ctx):
                continue
            scope = f"in {binding.namespace}" if binding.namespace else "cluster-wide"
            yield Finding(
                rule_id="AH-SA-006",
                severity=severity_for("AH-SA-006", binding.namespace or subject.namespace, ctx),
                namespace=binding.namespace,
                object=binding.ref,
                subject=subject,
                message=f"{binding.ref.kind} {binding.ref.name} grants {binding.role_ref.kind}/"
                f"{binding.role_ref.name} {scope} to the default ServiceAccount of {subject.namespace}",
            )


@rule("AH-SA-007", Severity.LOW, "ServiceAccount without permissions keeps token automount on")
def idle_automount(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A ServiceAccount (other than `default`, see AH-SA-001) that no binding names does not set
    automountServiceAccountToken: false, so its pods get a token that can do nothing useful but
    still identifies them to the API. Fix it once on the ServiceAccount."""
    partial = not _has_bindings(snapshot)
    index = permission_index(snapshot, ctx)
    exempt: dict[str, bool] = {}
    for sa in snapshot.service_accounts:
        namespace, name = namespace_of(sa), name_of(sa)
        if name == "default" or sa.get("automountServiceAccountToken") is False:
            continue
        if namespace not in exempt:
            exempt[namespace] = exempt_by_config(snapshot, ctx, namespace)
        if exempt[namespace] or index.service_account_bound(namespace, name):
            continue
        yield _finding(
            "AH-SA-007",
            ctx,
            _sa_ref(namespace, name),
            f"ServiceAccount {name} "
            + (_UNBOUND_IN_SCAN if partial else "has no RBAC bindings")
            + " but does not disable token automount",
        )


@rule("AH-SA-008", Severity.MEDIUM, "Pod forces a token its AccessPolicy turned off")
def policy_automount_override(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A pod or workload sets automountServiceAccountToken: true for a ServiceAccount whose
    AccessPolicy declares (or defaults to) no token: the pod overrides the policy."""
    managed = managed_service_accounts(snapshot, ctx)
    for workload in _governed(snapshot, ctx):
        policy = managed.get((workload.namespace, workload.service_account))
        if policy is None or policy.resolved.automount_token:
            continue
        if workload.spec.get("automountServiceAccountToken") is True:
            yield _finding(
                "AH-SA-008",
                ctx,
                workload.ref,
                f"{workload.describe()} sets automountServiceAccountToken: true but AccessPolicy "
                f"{policy.policy.name} turns the token of {workload.service_account} off",
            )


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

"""Native admission policies on the real control plane, through the real kubectl as different users.

The module installs the rendered policies with k8s/admission.py (default mode audit; one namespace
labelled enforce, one labelled audit), then checks: every compiled rule's bad object is denied in the
enforce namespace with a message naming the rule id and the fix while its good twin is admitted; the
audit namespace admits the same objects with a kubectl warning; the automount mutation; the AccessPolicy
guards for an `edit`-only user; a hypothesis differential test (server-side dry-run vs the audit
engine) and its negative control; CEL cost at the CRD's maximum list sizes; uninstall.
"""

import contextlib
import copy
import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kopf.testing import KopfRunner

# Imported here, before any test sets ACCESS_HYGIENE_ADMISSION_ENABLED: kopf handlers register once per process,
# and the owner-exemption watches (registered only when admission is on at import) must not leak into the
# operator of later test modules.
import access_hygiene.handlers  # noqa: F401
from access_hygiene.k8s import resources
from access_hygiene.k8s.admission import (
    ADMISSION_KINDS,
    admission_config,
    apply_admission,
    delete_admission,
    desired_admission,
    observe_parameters,
)
from access_hygiene.localcluster.controlplane import EDITOR_USER
from access_hygiene.models.policy import AccessPolicySpec, resolve_policy
from access_hygiene.reconcile.admission_forms import (
    AUTHORIZER_LIMIT,
    FORMS,
)
from access_hygiene.reconcile.audit import run_audit
from access_hygiene.reconcile.bootstrap_roles import bootstrap_cluster_roles
from access_hygiene.reconcile.ceiling import check_grant_ceiling
from access_hygiene.reconcile.snapshot import ClusterSnapshot
from access_hygiene.render.admission import ADMISSION_API_VERSION, MODE_LABEL, POLICY_PREFIX, selector
from access_hygiene.render.grant_ceiling import DEFAULT_GRANT_CEILING_RULES, render_grant_ceiling_role
from access_hygiene.settings import OperatorSettings
from tests.cluster.conftest import OPERATOR_ENV, wait_for
from tests.cluster.conftest import running_operator as cluster_operator
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

OPERATOR_NAMESPACE = "access-hygiene"
# The default ceiling plus one permission `edit` does not hold (the default leaves `update resourcequotas` out, and
# `edit` holds everything the default allows: tests/unit/test_admission_forms.py), so the requester check alone
# decides it.
WIDER_CEILING = [
    *DEFAULT_GRANT_CEILING_RULES,
    {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["update"]},
]
CEILING = "access-hygiene-grant-ceiling"
COMPILED = sorted(FORMS)
RBAC = "rbac.authorization.k8s.io"


def kubectl_binary(bin_dir: Path | None) -> str:
    """The kubectl built next to the control plane if there is one, else the one on PATH."""
    if bin_dir is not None and (bin_dir / "kubectl").is_file():
        return str(bin_dir / "kubectl")
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found (neither built with the control plane nor on PATH)")
    return found


class Kubectl:
    def __init__(self, cluster: Cluster, token: str, user: str) -> None:
        workdir = cluster.control_plane.workdir
        assert workdir is not None
        self.kubeconfig = workdir / f"kubeconfig-{user}-{uuid.uuid4().hex[:6]}"
        self.kubeconfig.write_text(cluster.control_plane.render_kubeconfig(token, user))
        self.binary = kubectl_binary(cluster.control_plane.bin_dir)

    def run(self, *args: str, manifest: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        command = [self.binary, f"--kubeconfig={self.kubeconfig}", *args]
        stdin = yaml.safe_dump(manifest) if manifest is not None else None
        return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)

    def create(self, manifest: dict[str, Any], namespace: str = "") -> subprocess.CompletedProcess[str]:
        return self.run("create", "-f", "-", *([f"--namespace={namespace}"] if namespace else []), manifest=manifest)


def operator_settings(**overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {"mode": "audit", "operator_namespace": OPERATOR_NAMESPACE, **overrides}
    return OperatorSettings(**values)


def _namespace(api: kubernetes.client.ApiClient, name: str, labels: dict[str, str]) -> None:
    resources.apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    # What the operator's namespace hygiene does in enforce mode; the audit engine's context below agrees.
    resources.apply(api, _default_sa(name))
    resources.apply(api, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": name}})


def _default_sa(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": namespace},
        "automountServiceAccountToken": False,
    }


class Env:
    def __init__(self, cluster: Cluster, suffix: str) -> None:
        self.cluster = cluster
        self.enforce = f"adm-enforce-{suffix}"
        self.audit = f"adm-audit-{suffix}"
        self.settings = operator_settings()
        self.admin = Kubectl(cluster, cluster.control_plane.admin_token, "local-admin")
        self.editor = Kubectl(cluster, cluster.control_plane.editor_token, EDITOR_USER)


def _wait_active(api: kubernetes.client.ApiClient, namespace: str) -> None:
    """Policies take effect once the API server's informers see them: poll with a known bad object."""
    probe = _bad_good("AH-POD-002")[0]

    def denied() -> bool:
        try:
            _dry_run(
                api, {**probe, "metadata": {**probe["metadata"], "name": f"probe-{uuid.uuid4().hex[:6]}"}}, namespace
            )
        except kubernetes.client.ApiException as error:
            return "AH-POD-002" in (error.body or "")
        return False

    wait_for(denied, timeout=30)
    wait_for(lambda: _guard_active(api, namespace), timeout=30)


def _guard_active(api: kubernetes.client.ApiClient, namespace: str) -> bool:
    """The AccessPolicy ceiling guard refuses a known-bad policy (its policy is active)."""
    known_bad = _access_policy("probe", [{"resources": ["pods/exec"], "verbs": ["create"]}])
    try:
        _dry_run(api, known_bad, namespace)
    except kubernetes.client.ApiException:
        return True
    return False


@pytest.fixture(scope="module")
def env(crd_installed: Cluster) -> Iterator[Env]:
    suffix = uuid.uuid4().hex[:6]
    environment = Env(crd_installed, suffix)
    with crd_installed.api_client() as api:
        resources.apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
        resources.apply(api, render_grant_ceiling_role(CEILING, WIDER_CEILING))
        _namespace(api, environment.enforce, {MODE_LABEL: "enforce"})
        _namespace(api, environment.audit, {MODE_LABEL: "audit"})
        apply_admission(api, environment.settings, datetime.now(UTC))
        _wait_active(api, environment.enforce)
        try:
            yield environment
        finally:
            delete_admission(api, environment.settings)
            resources.apply(api, render_grant_ceiling_role(CEILING))
            for name in (environment.enforce, environment.audit):
                kubernetes.client.CoreV1Api(api).delete_namespace(name)


# --- bad objects and their good twins, per compiled rule ------------------------------------------------

SAFE_CONTAINER = {
    "name": "app",
    "image": "registry.example/app:1",
    "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
}


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    body = {"containers": [copy.deepcopy(SAFE_CONTAINER)], "serviceAccountName": "app", **spec}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body}


def _binding(name: str, role: tuple[str, str], subjects: list[dict[str, str]]) -> dict[str, Any]:
    for subject in subjects:
        subject.setdefault("apiGroup", "" if subject["kind"] == "ServiceAccount" else RBAC)
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": role[0], "name": role[1]},
        "subjects": subjects,
    }


def _role(name: str, rules: list[dict[str, Any]], kind: str = "Role", labels: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": kind,
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
        "rules": rules,
    }


def _bad_good(rule_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    n = uuid.uuid4().hex[:6]
    alice = [{"kind": "User", "name": "alice"}]
    read = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    samples: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "AH-RBAC-001": (
            _binding(f"admin-{n}", ("ClusterRole", "cluster-admin"), [{"kind": "User", "name": "alice"}]),
            _binding(f"view-{n}", ("ClusterRole", "view"), [{"kind": "User", "name": "alice"}]),
        ),
        "AH-RBAC-002": (
            _binding(f"anon-{n}", ("ClusterRole", "view"), [{"kind": "User", "name": "system:anonymous"}]),
            _binding(f"named-{n}", ("ClusterRole", "view"), list(alice)),
        ),
        "AH-RBAC-003": (
            _binding(f"authn-{n}", ("ClusterRole", "view"), [{"kind": "Group", "name": "system:authenticated"}]),
            _binding(f"group-{n}", ("ClusterRole", "view"), [{"kind": "Group", "name": "team-a"}]),
        ),
        "AH-RBAC-004": (
            _binding(f"masters-{n}", ("ClusterRole", "view"), [{"kind": "Group", "name": "system:masters"}]),
            _binding(f"ops-{n}", ("ClusterRole", "view"), [{"kind": "Group", "name": "ops"}]),
        ),
        "AH-RBAC-016": (
            _role(f"verbs-{n}", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]),
            _role(f"verbs-{n}-ok", read),
        ),
        "AH-RBAC-017": (
            _role(f"res-{n}", [{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]}]),
            _role(f"res-{n}-ok", read),
        ),
        "AH-RBAC-018": (
            _role(
                f"agg-{n}",
                [{"apiGroups": [RBAC], "resources": ["clusterroles"], "verbs": ["escalate"]}],
                "ClusterRole",
                {"rbac.authorization.k8s.io/aggregate-to-edit": "true"},
            ),
            _role(f"agg-{n}-ok", read, "ClusterRole", {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
        ),
        "AH-SA-003": (
            _pod(f"default-sa-{n}", serviceAccountName="default", automountServiceAccountToken=True),
            _pod(f"default-sa-{n}-ok", serviceAccountName="default", automountServiceAccountToken=False),
        ),
        "AH-SA-005": (
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"legacy-{n}", "annotations": {"kubernetes.io/service-account.name": "app"}},
                "type": "kubernetes.io/service-account-token",
            },
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"opaque-{n}"}, "type": "Opaque"},
        ),
        "AH-SA-006": (
            _binding(f"default-{n}", ("ClusterRole", "view"), [{"kind": "ServiceAccount", "name": "default"}]),
            _binding(f"app-{n}", ("ClusterRole", "view"), [{"kind": "ServiceAccount", "name": "app"}]),
        ),
        "AH-POD-001": (
            _pod(
                f"priv-{n}",
                containers=[
                    {"name": "app", "image": "x", "securityContext": {"privileged": True, "runAsNonRoot": True}}
                ],
            ),
            _pod(f"priv-{n}-ok"),
        ),
        "AH-POD-002": (_pod(f"hostnet-{n}", hostPID=True), _pod(f"hostnet-{n}-ok", hostPID=False)),
        "AH-POD-003": (
            _pod(f"root-{n}", containers=[{"name": "app", "image": "x"}]),
            _pod(f"root-{n}-ok"),
        ),
    }
    return samples[rule_id]


def _namespaced(obj: dict[str, Any]) -> bool:
    return obj["kind"] not in ("ClusterRole", "ClusterRoleBinding")


def test_every_compiled_rule_has_a_sample() -> None:
    assert sorted(FORMS) == COMPILED
    for rule_id in COMPILED:
        bad, good = _bad_good(rule_id)
        assert bad["kind"] == good["kind"]


@pytest.mark.parametrize("rule_id", COMPILED)
def test_enforce_denies_bad_object_and_admits_good_twin(env: Env, rule_id: str) -> None:
    bad, good = _bad_good(rule_id)
    if not _namespaced(bad):
        pytest.skip("cluster-scoped: follows the default mode (audit here), see test_cluster_scoped_default_mode")
    denied = env.admin.create(bad, env.enforce)
    assert denied.returncode != 0, denied.stdout
    assert rule_id in denied.stderr, denied.stderr
    assert "Fix:" in denied.stderr, denied.stderr
    assert "denied request" in denied.stderr, denied.stderr
    admitted = env.admin.create(good, env.enforce)
    assert admitted.returncode == 0, admitted.stderr
    assert rule_id not in admitted.stderr


@pytest.mark.parametrize("rule_id", COMPILED)
def test_audit_admits_bad_object_with_warning(env: Env, rule_id: str) -> None:
    bad, _ = _bad_good(rule_id)
    namespace = env.audit if _namespaced(bad) else ""
    admitted = env.admin.create(bad, namespace)
    assert admitted.returncode == 0, admitted.stderr
    assert "Warning:" in admitted.stderr, admitted.stderr
    assert rule_id in admitted.stderr, admitted.stderr
    if not _namespaced(bad):
        resources.delete(env.cluster.api_client(), f"{RBAC}/v1", bad["kind"], bad["metadata"]["name"])


@pytest.mark.parametrize("rules", ["absent", "null", "empty"])
@pytest.mark.parametrize("kind", ["Role", "ClusterRole"])
def test_roles_without_rules_are_admitted_quietly(env: Env, kind: str, rules: str) -> None:
    """A Role or ClusterRole whose `rules` is absent, null or empty is valid and breaks no rule: admitted with no
    warning, in the enforce and the audit namespace alike (issue 25: the API server hands admission `rules: null`
    for the first two, and `object.?rules.orValue([])` is null then, so every role form failed to evaluate)."""
    role: dict[str, Any] = {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": {"name": f"no-rules-{rules}"}}
    if rules != "absent":
        role["rules"] = None if rules == "null" else []
    for namespace in (env.enforce, env.audit) if kind == "Role" else ("",):
        where = [f"--namespace={namespace}"] if namespace else []
        result = env.admin.run("create", "--dry-run=server", "-f", "-", *where, manifest=role)
        assert result.returncode == 0, result.stderr
        assert "Warning" not in result.stderr, result.stderr
    engine = engine_verdict(role, Differential.context_of(env.enforce), env.settings)
    assert engine == set()  # `scan -f` agrees: nothing to report


def test_default_roles_are_not_judged(env: Env) -> None:
    """A default ClusterRole (kubernetes.io/bootstrapping=rbac-defaults, autoupdate not off) is what kube-apiserver
    writes itself at start-up: no role form may judge it. `system:aggregate-to-edit` (aggregated into edit and
    granting serviceaccounts/token create) was flagged by AH-RBAC-018: its bootstrap guard covered the
    aggregate-to-admin clause only (`a && b || c`), which in enforce mode would refuse the API server's own write.
    Found by the differential's bootstrap-labelled roles."""
    shipped = next(r for r in bootstrap_cluster_roles() if r["metadata"]["name"] == "system:aggregate-to-edit")
    role = copy.deepcopy(shipped)
    role["metadata"]["name"] = f"copy-of-aggregate-to-edit-{uuid.uuid4().hex[:6]}"
    assert engine_verdict(role, Differential.context_of(env.enforce), env.settings) == set()
    result = env.admin.run("create", "--dry-run=server", "-f", "-", manifest=role)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    autoupdate_off = copy.deepcopy(role)  # the API server no longer reconciles it, its owner does: judged
    autoupdate_off["metadata"]["annotations"] = {"rbac.authorization.kubernetes.io/autoupdate": "false"}
    assert "AH-RBAC-018" in engine_verdict(autoupdate_off, Differential.context_of(env.enforce), env.settings)
    warned = env.admin.run("create", "--dry-run=server", "-f", "-", manifest=autoupdate_off)
    assert "AH-RBAC-018" in warned.stderr, warned.stderr


def test_cluster_scoped_default_mode(env: Env) -> None:
    """Cluster-scoped kinds have no namespace label: they follow the operator's default mode."""
    enforcing = operator_settings(mode="enforce")
    with env.cluster.api_client() as api:
        apply_admission(api, enforcing, datetime.now(UTC))
        try:
            bad, good = _bad_good("AH-RBAC-018")

            def denied() -> bool:
                result = env.admin.run("create", "--dry-run=server", "-f", "-", manifest=bad)
                return result.returncode != 0 and "AH-RBAC-018" in result.stderr

            wait_for(denied, timeout=30)
            admitted = env.admin.run("create", "--dry-run=server", "-f", "-", manifest=good)
            assert admitted.returncode == 0, admitted.stderr
        finally:
            apply_admission(api, env.settings, datetime.now(UTC))


def test_default_service_account_pod_gets_automount_off(env: Env) -> None:
    pod = _pod(f"plain-{uuid.uuid4().hex[:6]}")
    del pod["spec"]["serviceAccountName"]
    created = env.admin.run("create", "-f", "-", f"--namespace={env.enforce}", "-o", "json", manifest=pod)
    assert created.returncode == 0, created.stderr
    spec = json.loads(created.stdout)["spec"]
    assert spec["serviceAccountName"] == "default"
    assert spec["automountServiceAccountToken"] is False
    assert not [v for v in spec.get("volumes", []) if v["name"].startswith("kube-api-access-")]
    assert not [m for c in spec["containers"] for m in c.get("volumeMounts", [])]
    # The audit namespace is not mutated; a pod that says what it wants is left alone too.
    in_audit = env.admin.run("create", "-f", "-", f"--namespace={env.audit}", "-o", "json", manifest=pod)
    assert in_audit.returncode == 0, in_audit.stderr
    assert "automountServiceAccountToken" not in json.loads(in_audit.stdout)["spec"]
    explicit = _pod(
        f"explicit-{uuid.uuid4().hex[:6]}", serviceAccountName="default", automountServiceAccountToken=False
    )
    kept = env.admin.run("create", "-f", "-", f"--namespace={env.enforce}", "-o", "json", manifest=explicit)
    assert kept.returncode == 0, kept.stderr


def test_exempted_deployment_gets_its_pods_after_a_refresh(env: Env) -> None:
    """A Deployment exempted from AH-POD-003 is admitted; its ReplicaSet (annotations copied by the deployment
    controller) too; its pods once the operator's parameters name the ReplicaSet as an exempted owner."""
    name = f"legacy-{uuid.uuid4().hex[:6]}"
    annotations = {
        "accesshygiene.io/exempt": "AH-POD-003",
        "accesshygiene.io/exempt-owner": "team-a",
        "accesshygiene.io/exempt-reason": "image runs as root until v2",
        "accesshygiene.io/exempt-until": "2999-01-01",
    }
    template = {"metadata": {"labels": {"app": name}},
                "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "x"}]}}  # fmt: skip
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": name, "annotations": annotations},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                           "template": template}}  # fmt: skip
    unexempted = copy.deepcopy(deployment) | {"metadata": {"name": f"{name}-plain"}}
    denied = env.admin.create(unexempted, env.enforce)
    assert denied.returncode != 0
    assert "AH-POD-003" in denied.stderr, denied.stderr
    created = env.admin.create(deployment, env.enforce)
    assert created.returncode == 0, created.stderr
    with env.cluster.api_client() as api:

        def pods() -> list[dict[str, Any]]:
            return [p for p in resources.list_objects(api, "v1", "Pod", namespace=env.enforce)
                    if p["metadata"]["name"].startswith(f"{name}-")]  # fmt: skip

        replica_sets = wait_for(
            lambda: [r for r in resources.list_objects(api, "apps/v1", "ReplicaSet", namespace=env.enforce)
                     if r["metadata"]["name"].startswith(f"{name}-")], timeout=60,
        )  # fmt: skip
        assert replica_sets[0]["metadata"]["annotations"]["accesshygiene.io/exempt"] == "AH-POD-003"
        apply_admission(api, env.settings, datetime.now(UTC))  # the operator's refresh (timer or RS event)
        created_pods = wait_for(pods, timeout=90)
        assert created_pods[0]["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"


# --- AccessPolicy guards --------------------------------------------------------------------------------


def _access_policy(name: str, rules: list[dict[str, Any]], cluster_rules: list[dict[str, Any]] | None = None) -> dict:
    rbac: dict[str, Any] = {"rules": rules}
    if cluster_rules:
        rbac["clusterRules"] = cluster_rules
    return {
        "apiVersion": "accesshygiene.io/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name},
        "spec": {"rbac": rbac},
    }


@pytest.fixture(scope="module")
def editor(env: Env) -> Env:
    """local-editor holds the built-in `edit` role in the enforce namespace, plus AccessPolicy writes there
    (an aggregated ClusterRole, as a chart would ship)."""
    with env.cluster.api_client() as api:
        resources.apply(
            api,
            _role(
                "access-hygiene-accesspolicies-edit",
                [
                    {
                        "apiGroups": ["accesshygiene.io"],
                        "resources": ["accesspolicies"],
                        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                    }
                ],
                "ClusterRole",
                {"rbac.authorization.k8s.io/aggregate-to-edit": "true"},
            ),
        )
        binding = _binding("editor", ("ClusterRole", "edit"), [{"kind": "User", "name": EDITOR_USER}])
        binding["metadata"]["namespace"] = env.enforce
        resources.apply(api, binding)

    def can_create() -> bool:
        result = env.editor.run("auth", "can-i", "create", "accesspolicies.accesshygiene.io", f"-n={env.enforce}")
        return result.stdout.strip() == "yes"

    wait_for(can_create, timeout=30)
    return env


def _can(env: Env, verb: str, resource: str) -> bool:
    result = env.editor.run("auth", "can-i", verb, resource, f"-n={env.enforce}")
    return result.stdout.strip() == "yes"


def test_editor_denied_secrets_policy_allowed_configmaps(editor: Env) -> None:
    secrets = editor.editor.create(
        _access_policy("reads-secrets", [{"resources": ["secrets"], "verbs": ["get"]}]), editor.enforce
    )
    assert secrets.returncode != 0
    # `edit` does hold `get secrets`, so it is the grant ceiling that refuses it, at admission.
    assert "sensitive capability secrets-read" in secrets.stderr, secrets.stderr
    configmaps = editor.editor.create(
        _access_policy("reads-configmaps", [{"resources": ["configmaps"], "verbs": ["get"]}]), editor.enforce
    )
    assert configmaps.returncode == 0, configmaps.stderr


QUOTA_UPDATE = [{"resources": ["resourcequotas"], "verbs": ["update"]}]


def test_editor_denied_what_it_does_not_hold(editor: Env) -> None:
    """Inside the (widened) grant ceiling but not held by `edit`: only the requester (authorizer) check stops it."""
    assert _can(editor, "update", "configmaps")
    assert not _can(editor, "update", "resourcequotas")
    quota = editor.editor.create(_access_policy("updates-quota", QUOTA_UPDATE), editor.enforce)
    assert quota.returncode != 0
    assert f"does not hold: update resourcequotas in namespace {editor.enforce}" in quota.stderr, quota.stderr
    # The admin holds everything and may create the same policy.
    admin = editor.admin.run(
        "create", "--dry-run=server", "-f", "-", f"--namespace={editor.enforce}",
        manifest=_access_policy("updates-quota", QUOTA_UPDATE),
    )  # fmt: skip
    assert admin.returncode == 0, admin.stderr


def test_rules_outside_ceiling_rejected_at_admission(editor: Env) -> None:
    outside = editor.admin.run(
        "create", "--dry-run=server", "-f", "-", f"--namespace={editor.enforce}",
        manifest=_access_policy("too-wide", [{"apiGroups": ["apps"], "resources": ["deployments"],
                                              "verbs": ["delete"]}]),
    )  # fmt: skip
    assert outside.returncode != 0
    assert "outside the grant ceiling" in outside.stderr, outside.stderr
    assert "delete deployments" in outside.stderr, outside.stderr
    cluster = editor.admin.run(
        "create", "--dry-run=server", "-f", "-", f"--namespace={editor.enforce}",
        manifest=_access_policy("cluster", [], [{"resources": ["configmaps"], "verbs": ["get"]}]),
    )  # fmt: skip
    assert cluster.returncode != 0
    assert "clusterRules" in cluster.stderr, cluster.stderr


# Read access `edit` holds inside the default ceiling: 7 core resources x 3 verbs + 3 apps resources x get.
HELD_READS = [
    {"resources": ["configmaps", "endpoints", "persistentvolumeclaims", "pods", "pods/log", "services", "events"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "replicasets", "statefulsets"], "verbs": ["get"]},
]  # fmt: skip


def test_authorizer_checks_fit_the_cost_budget(editor: Env) -> None:
    """AUTHORIZER_LIMIT checks (the most the policy runs) fit the runtime budget; one more is refused
    with a precise message, not a cost error."""
    assert AUTHORIZER_LIMIT == 7 * 3 + 3
    at_limit = editor.editor.run(
        "create", "--dry-run=server", "-f", "-", f"--namespace={editor.enforce}",
        manifest=_access_policy("at-limit", HELD_READS),
    )  # fmt: skip
    assert at_limit.returncode == 0, at_limit.stderr
    over = copy.deepcopy(HELD_READS)
    over[1]["resources"].append("daemonsets")
    beyond = editor.editor.run(
        "create", "--dry-run=server", "-f", "-", f"--namespace={editor.enforce}",
        manifest=_access_policy("over-limit", over),
    )  # fmt: skip
    assert beyond.returncode != 0
    assert f"verifies at most {AUTHORIZER_LIMIT}" in beyond.stderr, beyond.stderr
    assert "cost" not in beyond.stderr.lower()


def _max_size_policy() -> dict[str, Any]:
    """An AccessPolicy at the CRD's maximum list sizes (64 rules x 16 apiGroups x 32 resources x 16 verbs x
    64 resourceNames), with names outside every sensitive capability."""
    letters = "abcdefghijklmnopqrstuvwxyz"

    def words(prefix: str, count: int) -> list[str]:
        return [f"{prefix}{letters[i // 26]}{letters[i % 26]}" for i in range(count)]

    rule = {
        "apiGroups": [f"{g}.example.com" for g in words("g", 16)],
        "resources": words("r", 32),
        "resourceNames": words("n", 64),
        "verbs": words("v", 16),
    }
    return _access_policy("max-size", [copy.deepcopy(rule) for _ in range(64)])


def test_cel_cost_at_crd_maximum_list_sizes(editor: Env) -> None:
    """The largest object the CRD admits is judged without a cost error, for both kinds of requester."""
    policy = _max_size_policy()
    as_admin = editor.admin.run(
        "create", "--dry-run=server", "-f", "-", f"--namespace={editor.enforce}", manifest=policy
    )
    as_editor = editor.editor.run(
        "create", "--dry-run=server", "-f", "-", f"--namespace={editor.enforce}", manifest=policy
    )
    for result in (as_admin, as_editor):
        assert "cost" not in result.stderr.lower(), result.stderr
        assert "budget" not in result.stderr.lower(), result.stderr
    assert as_admin.returncode == 0, as_admin.stderr  # beyond the ceiling-check size: left to the operator
    assert as_editor.returncode != 0
    assert f"verifies at most {AUTHORIZER_LIMIT}" in as_editor.stderr


# --- differential: server-side dry-run vs the audit engine --------------------------------------------

UNTILS = [
    "2020-01-01",
    "2999-12-31",
    "2999-01-01T10:00:00Z",
    "2999-01-01T10:00+02:00",
    "2001-05-05T00:00:00.5z",
    "soon",
    None,
]
RULE_LISTS = ["*", "AH-POD", "AH-RBAC-001", "AH-SA-005, ah-pod-003", "AH-NET-001", "AH-FOO", ""]


@st.composite
def exemption_annotations(draw: st.DrawFn) -> dict[str, str]:
    if not draw(st.booleans()):
        return {}
    annotations = {"accesshygiene.io/exempt": draw(st.sampled_from(RULE_LISTS))}
    if draw(st.integers(0, 4)):
        annotations["accesshygiene.io/exempt-owner"] = "team-a"
    if draw(st.integers(0, 4)):
        annotations["accesshygiene.io/exempt-reason"] = "migration"
    until = draw(st.sampled_from(UNTILS))
    if until is not None:
        annotations["accesshygiene.io/exempt-until"] = until
    return annotations


SUBJECT_NAMES = ["system:anonymous", "system:unauthenticated", "system:authenticated", "system:masters", "alice",
                 "default", "app", "system:kube-proxy", "system:node:n1"]  # fmt: skip


# (field, variant) pairs _put offered and produced: the differential checks it produced every one it offered.
VARIANTS_OFFERED: set[tuple[str, str]] = set()
VARIANTS_PRODUCED: set[tuple[str, str]] = set()


def _put(
    draw: st.DrawFn,
    target: dict[str, Any],
    key: str,
    value: Any,
    empty: Any = None,
    *,
    where: str = "",
    null: bool = True,
) -> None:
    """target[key] = value, or one of its degenerate forms: left out, null, or empty (when `empty` is given).

    Every optional field a compiled form reads goes through here, so the differential sees each one absent, null
    and empty (issue 25: a Role without `rules` reached admission as `rules: null` and failed to evaluate).
    `where` names the field's place for the coverage check (the same key in different objects)."""
    offered = ["absent", *(["null"] if null else []), "value", *(["empty"] if empty is not None else [])]
    field = f"{where}.{key}" if where else key
    VARIANTS_OFFERED.update((field, variant) for variant in offered)
    variant = draw(st.sampled_from([*offered, "value"]))
    VARIANTS_PRODUCED.add((field, variant))
    if variant == "null":
        target[key] = None
    elif variant == "empty":
        target[key] = copy.deepcopy(empty)
    elif variant == "value":
        target[key] = value


@st.composite
def subjects(draw: st.DrawFn, cluster_scoped: bool) -> list[dict[str, str]]:
    result = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["User", "Group", "ServiceAccount"]))
        subject = {"kind": kind, "name": draw(st.sampled_from(SUBJECT_NAMES)), "apiGroup": RBAC}
        if kind == "ServiceAccount":
            subject["apiGroup"] = ""
            subject["name"] = draw(st.sampled_from(["default", "app"]))
            namespace = draw(
                st.sampled_from(["", "same", "kube-system"] if not cluster_scoped else ["same", "kube-system"])
            )
            if namespace:
                subject["namespace"] = namespace
            else:
                _put(draw, subject, "namespace", "", where="subject")  # the value is the empty string
        result.append(subject)
    return result


def _metadata(draw: st.DrawFn, rbac: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"gen-{uuid.uuid4().hex[:10]}"}
    annotations = draw(exemption_annotations())
    labels: dict[str, str] = {}
    if rbac and draw(st.integers(0, 5)) == 0:
        labels["kubernetes.io/bootstrapping"] = "rbac-defaults"
        if draw(st.booleans()):
            annotations["rbac.authorization.kubernetes.io/autoupdate"] = draw(st.sampled_from(["false", "true"]))
    if labels:
        meta["labels"] = labels
    else:
        _put(draw, meta, "labels", {}, {}, where="metadata")
    if annotations:
        meta["annotations"] = annotations
    else:
        _put(draw, meta, "annotations", {}, {}, where="metadata")
    return meta


@st.composite
def bindings(draw: st.DrawFn) -> dict[str, Any]:
    cluster_scoped = draw(st.integers(0, 3)) == 0
    role_kind = "ClusterRole" if cluster_scoped else draw(st.sampled_from(["ClusterRole", "Role"]))
    binding = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding" if cluster_scoped else "RoleBinding",
        "metadata": _metadata(draw, rbac=True),
        "roleRef": {
            "apiGroup": RBAC,
            "kind": role_kind,
            "name": draw(st.sampled_from(["cluster-admin", "view", "mine"])),
        },
    }
    _put(draw, binding, "subjects", draw(subjects(cluster_scoped)), [], where="binding")
    return binding


VERBS = ["get", "list", "*", "escalate", "bind", "impersonate", "create", "update", "approve", "delete"]
GROUPS = ["", "*", RBAC, "apps", "certificates.k8s.io", "authentication.k8s.io", "admissionregistration.k8s.io"]
RESOURCES = ["pods", "secrets", "*", "roles", "clusterroles", "nodes/proxy", "users", "groups", "serviceaccounts/token",
             "signers", "validatingwebhookconfigurations", "pods/exec", "rolebindings", "*/scale"]  # fmt: skip


@st.composite
def policy_rules(draw: st.DrawFn, allow_urls: bool) -> dict[str, Any]:
    verbs = draw(st.lists(st.sampled_from(VERBS), min_size=1, max_size=3, unique=True))
    if allow_urls and draw(st.integers(0, 4)) == 0:
        rule: dict[str, Any] = {
            "nonResourceURLs": draw(
                st.lists(st.sampled_from(["*", "/healthz", "/metrics"]), min_size=1, max_size=2, unique=True)
            ),
            "verbs": verbs,
        }
        for key in ("apiGroups", "resources", "resourceNames"):  # must be empty on a non-resource rule
            _put(draw, rule, key, [], [], where="nonResourceRule")
        return rule
    rule = {
        "apiGroups": draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True)),
        "resources": draw(st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=3, unique=True)),
        "verbs": verbs,
    }
    _put(draw, rule, "resourceNames", ["edit"] if draw(st.integers(0, 2)) == 0 else [], [], where="resourceRule")
    _put(draw, rule, "nonResourceURLs", [], [], where="resourceRule")  # must be empty on a resource rule
    return rule


@st.composite
def roles(draw: st.DrawFn) -> dict[str, Any]:
    cluster_scoped = draw(st.booleans())
    meta = _metadata(draw, rbac=True)
    if cluster_scoped and draw(st.booleans()):
        target = draw(st.sampled_from(["admin", "edit", "view"]))
        aggregate = {f"rbac.authorization.k8s.io/aggregate-to-{target}": draw(st.sampled_from(["true", "false"]))}
        meta["labels"] = {**(meta.get("labels") or {}), **aggregate}
    role: dict[str, Any] = {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole" if cluster_scoped else "Role",
                            "metadata": meta}  # fmt: skip
    _put(draw, role, "rules", draw(st.lists(policy_rules(cluster_scoped), min_size=1, max_size=3)), [], where="role")
    if cluster_scoped and draw(st.integers(0, 2)) == 0:
        selectors = {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate": "true"}}]}
        _put(draw, role, "aggregationRule", selectors, where="clusterRole")
    return role


@st.composite
def security_context(draw: st.DrawFn, container: bool) -> dict[str, Any]:
    context: dict[str, Any] = {}
    where = "container.securityContext" if container else "pod.securityContext"
    # Not null on a container: the audit engine reads a container's `runAsUser: null` / `runAsNonRoot: null` as set,
    # without the pod-level fallback the API server applies (it drops the null), so `scan -f` disagrees there
    # (rules/pods.py, not this module's: tests/unit/test_admission_forms.py::test_scan_reads_null_run_as_fields).
    if draw(st.booleans()):
        _put(draw, context, "runAsUser", draw(st.sampled_from([0, 1000])), where=where, null=not container)
    if draw(st.booleans()):
        _put(draw, context, "runAsNonRoot", draw(st.booleans()), where=where, null=not container)
    if container:
        if draw(st.integers(0, 3)) == 0:
            _put(draw, context, "privileged", draw(st.booleans()), where=where)
        if draw(st.booleans()) and context.get("privileged") is not True:
            _put(draw, context, "allowPrivilegeEscalation", draw(st.booleans()), where=where)
    return context


@st.composite
def pod_specs(draw: st.DrawFn) -> dict[str, Any]:
    containers = []
    for i in range(draw(st.integers(1, 2))):
        container = {"name": f"c{i}", "image": "registry.example/app:1"}
        _put(draw, container, "securityContext", draw(security_context(True)), {}, where="container")
        containers.append(container)
    spec: dict[str, Any] = {"containers": containers}
    _put(draw, spec, "securityContext", draw(security_context(False)), {}, where="pod")
    init = {"name": "init", "image": "registry.example/init:1"}
    _put(draw, init, "securityContext", draw(security_context(True)), {}, where="initContainer")
    if draw(st.integers(0, 2)) == 0:
        _put(draw, spec, "initContainers", [init], [], where="pod")
    if draw(st.integers(0, 3)) == 0:
        _put(draw, spec, "ephemeralContainers", [], [], where="pod")  # cannot be set on create
    account = draw(st.sampled_from([None, "default", "app"]))
    if account is not None:
        _put(draw, spec, "serviceAccountName", account, "", where="pod")
    automount = draw(st.sampled_from([None, True, False]))
    if automount is not None:
        _put(draw, spec, "automountServiceAccountToken", automount, where="pod")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if draw(st.integers(0, 3)) == 0:
            _put(draw, spec, key, draw(st.booleans()), where="pod")
    return spec


@st.composite
def workloads(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["Pod", "Deployment", "CronJob"]))
    meta = _metadata(draw, rbac=False)
    if kind == "Pod" and draw(st.integers(0, 3)) == 0:
        # A controller that is not in the snapshot (nor in the cluster): both sides judge the pod itself.
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone",
                                    "uid": "00000000-0000-0000-0000-000000000001", "controller": True}]  # fmt: skip
    else:
        _put(draw, meta, "ownerReferences", [], [], where="metadata")
    spec = draw(pod_specs())
    labels = {"app": "gen"}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    template = {
        "metadata": {"labels": labels},
        "spec": {**spec, "restartPolicy": "Always" if kind == "Deployment" else "Never"},
    }
    if kind == "Deployment":
        body = {"selector": {"matchLabels": labels}, "template": template}
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": body}
    job = {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": template}}}
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta, "spec": job}


@st.composite
def secrets(draw: st.DrawFn) -> dict[str, Any]:
    meta = _metadata(draw, rbac=False)
    kind = draw(st.sampled_from(["Opaque", "kubernetes.io/service-account-token", "example.com/custom"]))
    if kind == "kubernetes.io/service-account-token":
        meta["annotations"] = {**(meta.get("annotations") or {}), "kubernetes.io/service-account.name": "app"}
        return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": kind}
    secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": meta}
    _put(draw, secret, "type", kind, "", where="secret")  # absent, null and "" are defaulted to Opaque
    return secret


ANY_OBJECT = st.one_of(bindings(), roles(), workloads(), secrets())

_API_PATHS = {"Pod": "pods", "Secret": "secrets", "Deployment": "deployments", "CronJob": "cronjobs",
              "Role": "roles", "RoleBinding": "rolebindings", "ClusterRole": "clusterroles",
              "ClusterRoleBinding": "clusterrolebindings"}  # fmt: skip


def _dry_run(api: kubernetes.client.ApiClient, obj: dict[str, Any], namespace: str) -> list[str]:
    """Server-side dry-run create; returns the response's Warning headers (raises ApiException when denied)."""
    return _dry_run_stored(api, obj, namespace)[0]


def _dry_run_stored(
    api: kubernetes.client.ApiClient, obj: dict[str, Any], namespace: str
) -> tuple[list[str], dict[str, Any]]:
    """Server-side dry-run create: the Warning headers and the object as the API server would store it."""
    rtype = resources.resource_type(obj["apiVersion"], obj["kind"])
    path = rtype.path(namespace if rtype.namespaced else "")
    configuration = api.configuration
    request = urllib.request.Request(
        f"{configuration.host}{path}?dryRun=All",
        data=json.dumps(obj).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": _bearer(configuration)},
    )
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return response.headers.get_all("Warning") or [], json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise _api_error(error) from None


def _bearer(configuration: kubernetes.client.Configuration) -> str:
    token = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    assert token, "the admin kubeconfig authenticates with a bearer token"
    return str(token)


def _api_error(error: urllib.error.HTTPError) -> kubernetes.client.ApiException:
    exception = kubernetes.client.ApiException(status=error.code, reason=str(error.reason))
    exception.body = error.read().decode()
    return exception


def _verdict(warnings: list[str]) -> set[str]:
    """Rule ids the warnings name; a warning of one of our policies that names none (an expression that failed
    to evaluate, e.g. on a null field) is kept as `error: ...`, so it can never pass for agreement."""
    found = set()
    for warning in warnings:
        named = {rule_id for rule_id in COMPILED if f"{rule_id} (" in warning}
        if named:
            found |= named
        elif f"ValidatingAdmissionPolicy '{POLICY_PREFIX}-" in warning:
            found.add(f"error: {warning}")
    return found


def server_verdict(api: kubernetes.client.ApiClient, obj: dict[str, Any], namespace: str) -> set[str]:
    """Rule ids the API server warns about (the namespace binds every rule in Warn+Audit mode)."""
    return _verdict(_dry_run(api, obj, namespace))


def engine_verdict(obj: dict[str, Any], context: list[dict[str, Any]], settings_: OperatorSettings) -> set[str]:
    """Rule ids the audit engine reports (not exempted) for the object alone plus the fixed context."""
    body = copy.deepcopy(obj)
    if body["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
        body["metadata"]["namespace"] = context[0]["metadata"]["name"]
    snapshot = ClusterSnapshot.from_objects([body, *context])
    findings = run_audit(snapshot, settings_.audit_context(now=datetime.now(UTC)), only=COMPILED)
    return {f.rule_id for f in findings if not f.exempted and f.rule_id in COMPILED}


class Differential:
    """Feeds objects to both sides and keeps the disagreements.

    The audit engine judges the object twice: as written (what `access-hygiene scan -f` reads, nulls and all)
    and as the API server stores it (what the operator audits live; admission saw the same, defaults applied).
    Both must equal the set of rules admission warned about."""

    def __init__(
        self, api: kubernetes.client.ApiClient, namespace: dict[str, Any], settings_: OperatorSettings
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.settings = settings_
        self.context = self.context_of(namespace["metadata"]["name"], namespace)
        self.cases = 0
        self.flagged = 0
        self.disagreements: list[tuple[dict[str, Any], set[str], set[str]]] = []

    @staticmethod
    def context_of(name: str, namespace: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The fixed objects the engine judges with: the namespace and its two ServiceAccounts."""
        namespace = namespace or {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        app = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": name}}
        return [namespace, _default_sa(name), app]

    def check(self, obj: dict[str, Any]) -> None:
        name = self.namespace["metadata"]["name"]
        body = copy.deepcopy(obj)
        for subject in body.get("subjects") or []:
            if subject.get("namespace") == "same":
                subject["namespace"] = name
        try:
            warnings, stored = _dry_run_stored(self.api, body, name)
        except kubernetes.client.ApiException as error:
            pytest.fail(f"dry-run rejected a generated object (generator bug): {error.body}\n{yaml.safe_dump(body)}")
        server = _verdict(warnings)
        self.cases += 1
        for label, judged in (("as written", body), ("as stored", stored)):
            engine = engine_verdict(judged, self.context, self.settings)
            self.flagged += bool(engine) and label == "as written"
            if server != engine:
                self.disagreements.append(({"judged": label, **body}, server, engine))


def _diff_namespace(api: kubernetes.client.ApiClient, name: str, annotations: dict[str, str] | None = None) -> dict:
    _namespace(api, name, {MODE_LABEL: "audit"})
    if annotations:
        resources.patch_merge(api, "v1", "Namespace", name, {"metadata": {"annotations": annotations}})
    live = resources.get(api, "v1", "Namespace", name)
    assert live is not None
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": live["metadata"]}


@pytest.fixture(scope="module")
def differential(env: Env) -> Iterator[Differential]:
    with env.cluster.api_client() as api:
        name = f"adm-diff-{uuid.uuid4().hex[:6]}"
        yield Differential(api, _diff_namespace(api, name), env.settings)
        kubernetes.client.CoreV1Api(api).delete_namespace(name)


DIFFERENTIAL_EXAMPLES = 400


# A namespace-level exemption (active, for a family and one rule) for a share of the differential's cases.
NAMESPACE_EXEMPTION = {
    "accesshygiene.io/exempt": "AH-POD, AH-RBAC-016",
    "accesshygiene.io/exempt-owner": "platform",
    "accesshygiene.io/exempt-reason": "legacy namespace",
    "accesshygiene.io/exempt-until": "2999-01-01T00:00:00Z",
}


def test_differential_admission_agrees_with_audit_engine(env: Env, differential: Differential) -> None:
    """Hypothesis-generated objects for every compiled rule: the set of rule ids the API server warns about
    equals the set the audit engine reports, for every object (a quarter of them in a namespace that carries
    an exemption annotation)."""
    VARIANTS_OFFERED.clear()
    VARIANTS_PRODUCED.clear()
    with env.cluster.api_client() as api:
        name = f"adm-diff-ns-{uuid.uuid4().hex[:6]}"
        exempt_ns = Differential(api, _diff_namespace(api, name, NAMESPACE_EXEMPTION), env.settings)

        @settings(max_examples=DIFFERENTIAL_EXAMPLES, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
        @given(ANY_OBJECT, st.integers(0, 3))
        def run(obj: dict[str, Any], where: int) -> None:
            (exempt_ns if where == 0 else differential).check(obj)

        try:
            run()
        finally:
            kubernetes.client.CoreV1Api(api).delete_namespace(name)
    cases = differential.cases + exempt_ns.cases
    flagged = differential.flagged + exempt_ns.flagged
    disagreements = differential.disagreements + exempt_ns.disagreements
    print(f"\ndifferential: {cases} cases ({exempt_ns.cases} in the exempted namespace), {flagged} flagged by "
          f"the engine, {len(disagreements)} disagreements")  # fmt: skip
    assert cases >= DIFFERENTIAL_EXAMPLES // 2
    assert exempt_ns.cases > 0
    assert flagged > cases // 10  # the generators reach the rules
    assert not disagreements, yaml.safe_dump(
        [{"object": o, "server": sorted(s), "engine": sorted(e)} for o, s, e in disagreements[:5]]
    )
    # ... and every field they may leave out, set to null or empty was left out, null and empty at least once
    assert not VARIANTS_OFFERED - VARIANTS_PRODUCED, sorted(VARIANTS_OFFERED - VARIANTS_PRODUCED)


def test_differential_catches_a_deliberate_cel_mismatch(env: Env, differential: Differential) -> None:
    """Negative control: drop hostIPC from AH-POD-002's CEL and the same differential must disagree."""
    with env.cluster.api_client() as api:
        policy = next(
            m
            for m in _desired(api, env.settings)
            if m["metadata"].get("labels", {}).get("accesshygiene.io/rule") == "AH-POD-002"
        )
        broken = copy.deepcopy(policy)
        variables = broken["spec"]["variables"]
        violation = next(v for v in variables if v["name"] == "violation")
        violation["expression"] = violation["expression"].replace(
            " || variables.podSpec.?hostIPC.orValue(false) == true", ""
        )
        assert (
            violation["expression"]
            != next(v for v in policy["spec"]["variables"] if v["name"] == "violation")["expression"]
        )
        resources.apply(api, broken)
        try:
            namespace = differential.namespace["metadata"]["name"]
            probe = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {**_pod("p")["spec"], "hostIPC": True},
            }
            wait_for(lambda: "AH-POD-002" not in server_verdict(api, probe, namespace), timeout=30)
            control = Differential(api, differential.namespace, env.settings)

            @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
            @given(workloads())
            def run(obj: dict[str, Any]) -> None:
                control.check(obj)

            run()
            print(f"\nnegative control: {control.cases} cases, {len(control.disagreements)} disagreements")
            assert control.disagreements, "a broken CEL expression went unnoticed"
            assert all("AH-POD-002" in engine - server for _, server, engine in control.disagreements)
        finally:
            resources.apply(api, policy)


CEILING_GROUPS = ["", "apps", "*", "coordination.k8s.io", RBAC, "certificates.k8s.io", "admissionregistration.k8s.io"]
CEILING_RESOURCES = ["configmaps", "pods", "pods/log", "secrets", "deployments", "deployments/scale", "leases",
                     "nodes/proxy", "serviceaccounts/token", "pods/exec", "roles", "signers", "resourcequotas",
                     "certificatesigningrequests/approval", "validatingwebhookconfigurations", "*"]  # fmt: skip
CEILING_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "*", "escalate", "bind",
                 "impersonate", "approve"]  # fmt: skip


@st.composite
def access_policy_rules(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.integers(0, 9)) < 7:  # mostly inside (a subset of one ceiling rule), so both verdicts occur
        base = draw(st.sampled_from(WIDER_CEILING))
        inside: dict[str, Any] = {
            key: draw(st.lists(st.sampled_from(base[key]), min_size=1, max_size=2, unique=True))
            for key in ("apiGroups", "resources", "verbs")
        }
        if draw(st.integers(0, 4)) == 0:
            inside["verbs"].append(draw(st.sampled_from(CEILING_VERBS)))
            inside["verbs"] = sorted(set(inside["verbs"]))
        return inside
    rule: dict[str, Any] = {
        "apiGroups": draw(st.lists(st.sampled_from(CEILING_GROUPS), min_size=1, max_size=2, unique=True)),
        "resources": draw(st.lists(st.sampled_from(CEILING_RESOURCES), min_size=1, max_size=3, unique=True)),
        "verbs": draw(st.lists(st.sampled_from(CEILING_VERBS), min_size=1, max_size=3, unique=True)),
    }
    if draw(st.integers(0, 3)) == 0:
        rule["resourceNames"] = ["a"]
    return rule


@st.composite
def access_policies(draw: st.DrawFn) -> dict[str, Any]:
    rules = draw(st.lists(access_policy_rules(), min_size=1, max_size=3))
    cluster_rules = draw(st.lists(access_policy_rules(), max_size=1)) if draw(st.integers(0, 4)) == 0 else []
    return _access_policy(f"gen-{uuid.uuid4().hex[:10]}", rules, cluster_rules)


def test_differential_ceiling_guard_agrees_with_operator_check(env: Env) -> None:
    """Generated AccessPolicies, dry-run as the admin (who skips the requester check): the API server refuses
    exactly those the operator's own grant-ceiling check (reconcile/ceiling.py) would refuse."""
    cases, refused, disagreements = 0, 0, []
    with env.cluster.api_client() as api:
        ceiling = resources.get(api, f"{RBAC}/v1", "ClusterRole", CEILING)
        assert ceiling is not None
        wait_for(lambda: _guard_active(api, env.enforce), timeout=30)

        @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
        @given(access_policies())
        def run(policy: dict[str, Any]) -> None:
            nonlocal cases, refused
            body = ""
            try:
                _dry_run(api, policy, env.enforce)
            except kubernetes.client.ApiException as error:
                body = error.body or "?"
            server = bool(body)
            if server and "access-hygiene-accesspolicy-ceiling" not in body:
                pytest.fail(f"refused by something other than the ceiling guard: {body}")
            meta = {"name": policy["metadata"]["name"], "namespace": env.enforce}
            resolved = resolve_policy(meta, AccessPolicySpec.model_validate(policy["spec"]))
            violations = check_grant_ceiling(
                resolved,
                ceiling["rules"],
                allowed_sensitive=frozenset(env.settings.allowed_sensitive_capabilities),
                allow_cluster_rules=env.settings.allow_cluster_rules,
            )
            cases += 1
            refused += bool(violations)
            if server != bool(violations):
                disagreements.append((policy["spec"], server, [v.reason for v in violations]))

        run()
    print(f"\nceiling differential: {cases} cases, {refused} refused by the operator's check, "
          f"{len(disagreements)} disagreements")  # fmt: skip
    assert 0 < refused < cases
    assert not disagreements, yaml.safe_dump(disagreements[:5])


# --- lifecycle -------------------------------------------------------------------------------------------


def _desired(api: kubernetes.client.ApiClient, settings_: OperatorSettings) -> list[dict[str, Any]]:
    return desired_admission(settings_, observe_parameters(api, settings_, datetime.now(UTC)))


def _admission_objects(api: kubernetes.client.ApiClient) -> list[str]:
    config = admission_config(operator_settings())
    return [
        f"{kind}/{obj['metadata']['name']}"
        for kind in ADMISSION_KINDS
        for obj in resources.list_objects(api, ADMISSION_API_VERSION, kind, label_selector=selector(config))
    ]


def test_uninstall_by_owner_garbage_collection(crd_installed: Cluster, env: Env) -> None:
    """With an owner ClusterRole (what the chart ships), deleting it (helm uninstall) removes every policy
    and binding; afterwards the test puts the module's policies back."""
    owner = "access-hygiene-admission-test-owner"
    owned = operator_settings(admission_owner_cluster_role=owner)
    with crd_installed.api_client() as api:
        resources.apply(api, _role(owner, [], "ClusterRole"))
        apply_admission(api, owned, datetime.now(UTC))
        live = _admission_objects(api)
        assert len(live) == len(_desired(api, owned))
        owners = {
            ref["name"]
            for kind in ADMISSION_KINDS
            for obj in resources.list_objects(
                api, ADMISSION_API_VERSION, kind, label_selector=selector(admission_config(owned))
            )
            for ref in obj["metadata"].get("ownerReferences", [])
        }  # fmt: skip
        assert owners == {owner}
        resources.delete(api, f"{RBAC}/v1", "ClusterRole", owner)
        wait_for(lambda: not _admission_objects(api), timeout=60)
        # Reinstalling in the same API server enforces again (no built-in paramKind whose informer would
        # stay stopped, kubernetes/kubernetes#130887).
        apply_admission(api, env.settings, datetime.now(UTC))
        _wait_active(api, env.enforce)


@contextlib.contextmanager
def running_operator(cluster: Cluster, **env: str) -> Iterator[KopfRunner]:
    """The operator in-process (kopf), as its own identity, with admission settings from env."""
    with cluster_operator(cluster.control_plane.operator_kubeconfig, {**OPERATOR_ENV, **env}) as runner:
        yield runner


def _params_now(api: kubernetes.client.ApiClient) -> str:
    """The operator's clock as rendered into a rule policy (variables.now)."""
    policy = resources.get(api, ADMISSION_API_VERSION, "ValidatingAdmissionPolicy", "access-hygiene-ah-pod-001")
    variables = (policy or {}).get("spec", {}).get("variables", [])
    return next((str(v["expression"]) for v in variables if v["name"] == "now"), "")


def test_operator_installs_refreshes_and_switches_off(crd_installed: Cluster, env: Env) -> None:
    """The handlers: start-up install (idempotent over what is there), the parameter clock advancing on the
    timer, and a start with admission off removing everything."""
    with crd_installed.api_client() as api:
        delete_admission(api, env.settings)
        with running_operator(crd_installed, ACCESS_HYGIENE_ADMISSION_ENABLED="true",
                              ACCESS_HYGIENE_ADMISSION_REFRESH_SECONDS="1"):  # fmt: skip
            wait_for(lambda: len(_admission_objects(api)) == len(_desired(api, env.settings)), timeout=60)
            first = wait_for(lambda: _params_now(api), timeout=30)
            wait_for(lambda: _params_now(api) > first, timeout=30)
        with running_operator(crd_installed, ACCESS_HYGIENE_ADMISSION_ENABLED="false"):
            wait_for(lambda: not _admission_objects(api), timeout=60)
            wait_for(lambda: not _params_now(api), timeout=30)
        apply_admission(api, env.settings, datetime.now(UTC))


def test_switch_off_removes_everything(crd_installed: Cluster, env: Env) -> None:
    with crd_installed.api_client() as api:
        assert _admission_objects(api)
        removed = delete_admission(api, env.settings)
        assert removed == len(_desired(api, env.settings))
        assert _admission_objects(api) == []
        bad = _bad_good("AH-POD-002")[0]

        def admitted_quietly() -> bool:
            result = env.admin.run("create", "--dry-run=server", "-f", "-", f"--namespace={env.enforce}", manifest=bad)
            return result.returncode == 0 and "Warning" not in result.stderr

        wait_for(admitted_quietly, timeout=30)


def test_kubectl_helper_prefers_built_binary(env: Env, tmp_path: Path) -> None:
    built = tmp_path / "kubectl"
    built.write_text("#!/bin/sh\n")
    assert kubectl_binary(tmp_path) == str(built)
    assert kubectl_binary(None) == shutil.which("kubectl")
    version = env.admin.run("version", "--client", "-o", "json")
    assert version.returncode == 0
    assert "clientVersion" in version.stdout

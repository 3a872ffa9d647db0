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
import dataclasses
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kopf.testing import KopfRunner

# Imported here, before any test sets ACCESS_HYGIENE_ADMISSION_ENABLED: kopf handlers register once per process.
import access_hygiene.handlers  # noqa: F401
from access_hygiene.engine.admission.cel import stamp
from access_hygiene.engine.admission.forms import FORMS
from access_hygiene.engine.admission.guards import AUTHORIZER_LIMIT
from access_hygiene.engine.audit.runner import run_audit
from access_hygiene.engine.catalogue.rbac_tampering import PORT_FORWARD, REBIND, TRAFFIC_KINDS
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.rbac.bootstrap_roles import bootstrap_cluster_roles
from access_hygiene.engine.rbac.capabilities import (
    BIND,
    CONFIGMAP_WRITE,
    CREATE_PODS,
    CREATE_WORKLOADS,
    CSR_APPROVE,
    EPHEMERAL_CONTAINERS,
    ESCALATE,
    EVENTS_DELETE,
    EXEC,
    IMPERSONATE,
    NODES_PROXY,
    PV_CREATE,
    SECRETS_READ,
    SECRETS_WRITE_DELETE,
    SIGNER_APPROVE,
    TOKEN_CREATE,
    WEBHOOK_WRITE,
    Pattern,
)
from access_hygiene.engine.rbac.grant_ceiling import check_grant_ceiling
from access_hygiene.engine.rbac.permissions import is_bootstrap
from access_hygiene.k8s import resources
from access_hygiene.k8s.admission import (
    ADMISSION_KINDS,
    AdmissionWriter,
    admission_config,
    apply_admission,
    delete_admission,
    desired_admission,
    observe_parameters,
)
from access_hygiene.localcluster.controlplane import EDITOR_USER
from access_hygiene.models.policy import AccessPolicySpec, resolve_policy
from access_hygiene.render.admission import ADMISSION_API_VERSION, MODE_LABEL, POLICY_PREFIX, selector
from access_hygiene.render.admission_parameters import PARAMETERS_API_VERSION, PARAMETERS_KIND, PARAMETERS_NAME
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
CORE = sorted(rule_id for rule_id, spec in FORMS.items() if not spec.profile)
PROFILE = sorted(rule_id for rule_id, spec in FORMS.items() if spec.profile)
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
        self.privileged = f"adm-privileged-{suffix}"  # an audit-mode namespace the settings call privileged
        # The role-capabilities profile set to deny, so the enforce namespace shows what it refuses.
        self.settings = operator_settings(
            admission_role_capabilities="deny", privileged_namespaces=["kube-system", self.privileged]
        )
        self.admin = Kubectl(cluster, cluster.control_plane.admin_token, "local-admin")
        self.editor = Kubectl(cluster, cluster.control_plane.editor_token, EDITOR_USER)
        # Admission is installed as the operator's identity, as the operator does: the forms on roles skip the
        # requests of whoever installed them (SelfSubjectReview), and the tests write roles as the admin.
        self.operator = kubernetes.config.new_client_from_config(
            config_file=str(cluster.control_plane.operator_kubeconfig)
        )


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
        _namespace(api, environment.privileged, {MODE_LABEL: "audit"})
        _namespace(api, environment.audit, {MODE_LABEL: "audit"})
        apply_admission(environment.operator, environment.settings, datetime.now(UTC))
        _wait_active(api, environment.enforce)
        try:
            yield environment
        finally:
            delete_admission(api, environment.settings)
            resources.apply(api, render_grant_ceiling_role(CEILING))
            for name in (environment.enforce, environment.audit, environment.privileged):
                kubernetes.client.CoreV1Api(api).delete_namespace(name)
            environment.operator.close()


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
        # Aggregated into view with a write verb: nothing else flags it (escalate would be AH-RBAC-006's too, and
        # with several policies denying, which message the API server returns is not defined).
        "AH-RBAC-018": (
            _role(
                f"agg-{n}",
                [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["update"]}],
                "ClusterRole",
                {"rbac.authorization.k8s.io/aggregate-to-view": "true"},
            ),
            _role(f"agg-{n}-ok", read, "ClusterRole", {"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
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
        # The role-capabilities profile: the role, as if bound (a ClusterRole for the cluster-wide-only rules).
        **{
            rule_id: (_role(f"{rule_id.lower()}-{n}", bad, kind), _role(f"{rule_id.lower()}-{n}-ok", good, kind))
            for rule_id, (kind, bad, good) in _capability_samples().items()
        },
        "AH-POD-003": (
            _pod(f"root-{n}", containers=[{"name": "app", "image": "x"}]),
            _pod(f"root-{n}-ok"),
        ),
    }
    return samples[rule_id]


def _rule(group: str, resources: list[str], verbs: list[str], names: list[str] | None = None) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs, **({"resourceNames": names} if names else {})}


def _capability_samples() -> dict[str, tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
    """(kind, rules of the bad role, rules of its good twin) per role-capabilities rule."""
    # ten kinds no other rule cares about deleting (services, endpoints, secrets, events would be AH-RBAC-025/026/021)
    ten = ["pods", "configmaps", "persistentvolumeclaims", "serviceaccounts", "limitranges", "replicationcontrollers",
           "podtemplates", "resourcequotas", "horizontalpodautoscalers", "poddisruptionbudgets"]  # fmt: skip
    return {
        "AH-RBAC-005": (
            "Role",
            [_rule("", ["serviceaccounts"], ["impersonate"])],
            [_rule("", ["serviceaccounts"], ["get"])],
        ),
        "AH-RBAC-006": ("Role", [_rule(RBAC, ["roles"], ["escalate"])], [_rule(RBAC, ["roles"], ["get"])]),
        "AH-RBAC-007": (
            "Role",
            [_rule(RBAC, ["roles"], ["bind"], ["admin"])],
            [_rule(RBAC, ["roles"], ["bind"], ["view"])],
        ),
        "AH-RBAC-008": (
            "Role",
            [_rule("", ["serviceaccounts/token"], ["create"])],
            [_rule("", ["serviceaccounts"], ["get"])],
        ),
        "AH-RBAC-009": ("Role", [_rule("", ["secrets"], ["list"])], [_rule("", ["secrets"], ["get"], ["app-config"])]),
        "AH-RBAC-010": ("ClusterRole", [_rule("", ["nodes/proxy"], ["get"])], [_rule("", ["nodes"], ["get"])]),
        "AH-RBAC-011": (
            "ClusterRole",
            [_rule("admissionregistration.k8s.io", ["validatingwebhookconfigurations"], ["create"])],
            [_rule("admissionregistration.k8s.io", ["validatingwebhookconfigurations"], ["get"])],
        ),
        "AH-RBAC-012": (
            "ClusterRole",
            [
                _rule("certificates.k8s.io", ["signers"], ["approve"]),
                _rule("certificates.k8s.io", ["certificatesigningrequests/approval"], ["update"]),
            ],
            [_rule("certificates.k8s.io", ["signers"], ["approve"])],
        ),
        "AH-RBAC-013": ("Role", [_rule("", ["pods/exec"], ["create"])], [_rule("", ["pods/log"], ["get"])]),
        "AH-RBAC-014": ("Role", [_rule("", ["pods/ephemeralcontainers"], ["patch"])], [_rule("", ["pods"], ["get"])]),
        "AH-RBAC-015": (
            "Role",
            [_rule("apps", ["deployments"], ["create"])],
            [_rule("apps", ["deployments"], ["get"])],
        ),
        "AH-RBAC-019": ("ClusterRole", [_rule("", ["configmaps"], ["update"])], [_rule("", ["configmaps"], ["get"])]),
        "AH-RBAC-020": (
            "ClusterRole",
            [_rule("", ["persistentvolumes"], ["create"])],
            [_rule("", ["persistentvolumes"], ["get"])],
        ),
        "AH-RBAC-021": ("Role", [_rule("", ["events"], ["delete"])], [_rule("", ["events"], ["get"])]),
        "AH-RBAC-025": ("Role", [_rule("", ["secrets"], ["delete"])], [_rule("", ["secrets"], ["delete"], ["old"])]),
        "AH-RBAC-026": ("Role", [_rule("", ["services"], ["create"])], [_rule("", ["services"], ["get"])]),
        "AH-RBAC-027": ("Role", [_rule("", ["pods/portforward"], ["create"])], [_rule("", ["pods"], ["get"])]),
        "AH-RBAC-028": ("Role", [_rule(RBAC, ["rolebindings"], ["patch"])], [_rule(RBAC, ["rolebindings"], ["get"])]),
        "AH-RBAC-029": ("Role", [_rule("", ten, ["delete"])], [_rule("", ten[:3], ["delete"])]),
    }


def _edge_samples() -> list[dict[str, Any]]:
    """Roles on the edges of what the profile's counting rules count (AH-RBAC-029: `*` resources are any resource
    in `*` or the core group, one kind per other group; a resource in two groups is one kind)."""
    nine = ["pods", "configmaps", "persistentvolumeclaims", "serviceaccounts", "limitranges", "replicationcontrollers",
            "podtemplates", "resourcequotas", "horizontalpodautoscalers"]  # fmt: skip
    rules = {
        "apps-star": [_rule("apps", ["*"], ["delete"])],
        "core-star": [_rule("", ["*"], ["deletecollection"])],
        "every-star": [_rule("*", ["*"], ["*"])],
        "nine-and-a-group": [_rule("", nine, ["delete"]), _rule("metrics.k8s.io", ["*"], ["delete"])],
        "nine-in-two-groups": [{"apiGroups": ["", "apps"], "resources": nine, "verbs": ["delete"]}],
        "nine-and-two-groups": [_rule("", nine[:8], ["delete"]), {"apiGroups": ["a.example", "b.example"],
                                                                  "resources": ["*"], "verbs": ["delete"]}],
        "named": [{**_rule("", [*nine, "secrets"], ["delete"]), "resourceNames": ["x"]}],
    }  # fmt: skip
    return [_role(f"edge-{name}-{uuid.uuid4().hex[:6]}", r) for name, r in rules.items()]


def _namespaced(obj: dict[str, Any]) -> bool:
    return obj["kind"] not in ("ClusterRole", "ClusterRoleBinding")


def test_every_compiled_rule_has_a_sample() -> None:
    """Each bad sample breaks its own rule only (so a denial, which names one policy, names that rule), the good
    twin none; for roles, the engine's verdict (run_audit, the role bound for the profile) says so."""
    assert sorted(FORMS) == COMPILED
    context = Differential.context_of("samples")
    everything = operator_settings(admission_role_capabilities="deny")
    for rule_id in COMPILED:
        bad, good = _bad_good(rule_id)
        assert bad["kind"] == good["kind"]
        if bad["kind"] in ("Role", "ClusterRole"):
            assert engine_verdict(bad, context, everything) == {rule_id}, rule_id
            assert engine_verdict(good, context, everything) == set(), rule_id


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
    """Cluster-scoped kinds have no namespace label: they follow the operator's default mode (the role-capabilities
    profile too, when it denies)."""
    enforcing = operator_settings(mode="enforce", admission_role_capabilities="deny")
    apply_admission(env.operator, enforcing, datetime.now(UTC))
    try:
        for rule_id in ("AH-RBAC-018", "AH-RBAC-010"):
            bad, good = _bad_good(rule_id)

            def denied(bad: dict[str, Any] = bad, rule_id: str = rule_id) -> bool:
                result = env.admin.run("create", "--dry-run=server", "-f", "-", manifest=bad)
                return result.returncode != 0 and rule_id in result.stderr

            wait_for(denied, timeout=30)
            admitted = env.admin.run("create", "--dry-run=server", "-f", "-", manifest=good)
            assert admitted.returncode == 0, admitted.stderr
    finally:
        apply_admission(env.operator, env.settings, datetime.now(UTC))


def _create_result(env: Env, manifest: dict[str, Any], namespace: str) -> subprocess.CompletedProcess[str]:
    return env.admin.run("create", "--dry-run=server", "-f", "-", f"--namespace={namespace}", manifest=manifest)


def test_role_capabilities_profile_warns_by_default(env: Env) -> None:
    """Without a choice the profile warns, in enforce namespaces too (the core rules still deny there); `off` drops
    it. The module's own settings chose `deny` (test_enforce_denies_bad_object_and_admits_good_twin)."""
    secrets_reader, _ = _bad_good("AH-RBAC-009")
    wildcard, _ = _bad_good("AH-RBAC-016")
    try:
        apply_admission(env.operator, operator_settings(), datetime.now(UTC))

        def warned() -> bool:
            result = _create_result(env, secrets_reader, env.enforce)
            return result.returncode == 0 and "AH-RBAC-009" in result.stderr and "Warning:" in result.stderr

        wait_for(warned, timeout=30)
        refused = _create_result(env, wildcard, env.enforce)
        assert refused.returncode != 0
        assert "AH-RBAC-016" in refused.stderr, refused.stderr
        apply_admission(env.operator, operator_settings(admission_role_capabilities="off"), datetime.now(UTC))
        wait_for(lambda: "AH-RBAC-009" not in _create_result(env, secrets_reader, env.enforce).stderr, timeout=30)
        assert _create_result(env, secrets_reader, env.enforce).returncode == 0
    finally:
        apply_admission(env.operator, env.settings, datetime.now(UTC))
        wait_for(lambda: _create_result(env, secrets_reader, env.enforce).returncode != 0, timeout=30)


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
        apply_admission(env.operator, env.settings, datetime.now(UTC))  # the operator's refresh (timer or RS event)
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


def _large_role(rules: int, extra_verbs: list[str]) -> dict[str, Any]:
    """A Role of `rules` rules, each with 10 apiGroups, 40 resources and 12 verbs (plus extra_verbs) of made-up
    names: every role form walks every element (about half a megabyte at 800 rules)."""
    letters = "abcdefghijklmnopqrstuvwxyz"

    def words(prefix: str, count: int) -> list[str]:
        return [f"{prefix}{letters[i // 26 % 26]}{letters[i % 26]}" for i in range(count)]

    return _role(f"large-{uuid.uuid4().hex[:6]}", [
        {"apiGroups": words("g", 10), "resources": words(f"r{i}x", 40), "verbs": [*words("v", 12), *extra_verbs]}
        for i in range(rules)
    ])  # fmt: skip


def test_role_forms_cost_at_large_roles(env: Env) -> None:
    """The forms on roles (the role-capabilities profile's 19 in one policy, sharing one runtime cost budget) judge
    a very large Role without a cost error: admitted when it grants nothing they flag, refused for what it grants
    when it deletes 32,000 kinds (AH-RBAC-029 counts distinct kinds over a sorted list: distinct() would cost the
    square of the length and ran out of budget at 2,000)."""
    quiet = _create_result(env, _large_role(800, []), env.enforce)
    assert quiet.returncode == 0, quiet.stderr[-500:]
    assert "Warning" not in quiet.stderr, quiet.stderr[-500:]
    deleting = _create_result(env, _large_role(800, ["delete"]), env.enforce)
    assert deleting.returncode != 0
    assert "AH-RBAC-029" in deleting.stderr, deleting.stderr[-500:]
    assert "cost" not in deleting.stderr.lower(), deleting.stderr[-500:]


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
    variant = draw(st.sampled_from(["value", *offered]))  # the value first: hypothesis favours the first choice
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


VERBS = ["get", "list", "*", "escalate", "bind", "impersonate", "create", "update", "approve", "delete", "patch",
         "deletecollection"]  # fmt: skip
GROUPS = ["", "*", RBAC, "apps", "certificates.k8s.io", "authentication.k8s.io", "admissionregistration.k8s.io",
          "networking.k8s.io", "batch", "events.k8s.io", "discovery.k8s.io"]  # fmt: skip
RESOURCES = ["pods", "secrets", "*", "roles", "clusterroles", "nodes/proxy", "users", "groups", "serviceaccounts/token",
             "signers", "validatingwebhookconfigurations", "pods/exec", "rolebindings", "*/scale", "configmaps",
             "persistentvolumes", "events", "pods/portforward", "pods/ephemeralcontainers", "pods/attach",
             "networkpolicies", "services", "endpoints", "endpointslices", "ingresses", "deployments", "jobs",
             "certificatesigningrequests/approval", "serviceaccounts", "clusterrolebindings", "uids"]  # fmt: skip
# Plain resources for rules that delete many kinds (AH-RBAC-029 counts ten or more).
MANY_KINDS = ["pods", "services", "configmaps", "secrets", "persistentvolumeclaims", "serviceaccounts", "endpoints",
              "events", "limitranges", "replicationcontrollers", "podtemplates", "resourcequotas", "deployments",
              "pods/log"]  # fmt: skip


# Every capability pattern a role-capabilities form twins, so generated rules land on, next to and beside each one.
SEED_PATTERNS: list[Pattern] = [IMPERSONATE, ESCALATE, BIND, TOKEN_CREATE, SECRETS_READ, SECRETS_WRITE_DELETE,
                                NODES_PROXY, WEBHOOK_WRITE, SIGNER_APPROVE, CSR_APPROVE, EXEC, EPHEMERAL_CONTAINERS,
                                CREATE_PODS, CREATE_WORKLOADS, CONFIGMAP_WRITE, PV_CREATE, EVENTS_DELETE, PORT_FORWARD,
                                REBIND, *(pattern for _, pattern in TRAFFIC_KINDS)]  # fmt: skip


@st.composite
def seeded_rules(draw: st.DrawFn, pattern: Pattern | None = None) -> dict[str, Any]:
    """A rule made of parts of a capability pattern (some verbs, a group, some resources), now and then with a
    verb, group or resource from elsewhere, so it grants the pattern or misses it narrowly."""
    verbs, groups, resources = pattern or draw(st.sampled_from(SEED_PATTERNS))

    def part(values: tuple[str, ...], others: list[str], most: int) -> list[str]:
        chosen = draw(st.lists(st.sampled_from(values), min_size=1, max_size=most, unique=True))
        if draw(st.integers(0, 4)) == 0:
            chosen = [*chosen[:-1], draw(st.sampled_from(others))] if draw(st.booleans()) else chosen
        return sorted(set(chosen))

    rule: dict[str, Any] = {
        "apiGroups": part(groups, GROUPS, 1),
        "resources": part(resources, RESOURCES, 2),
        "verbs": part(verbs, VERBS, 2),
    }
    names = draw(st.sampled_from([[], [], ["edit"], ["view"], ["admin", "other"]]))
    _put(draw, rule, "resourceNames", names, [], where="seededRule")
    return rule


@st.composite
def policy_rules(draw: st.DrawFn, allow_urls: bool) -> dict[str, Any]:
    verbs = draw(st.lists(st.sampled_from(VERBS), min_size=1, max_size=3, unique=True))
    if allow_urls and draw(st.integers(0, 2)) == 0:
        rule: dict[str, Any] = {
            "nonResourceURLs": draw(
                st.lists(st.sampled_from(["*", "/healthz", "/metrics"]), min_size=1, max_size=2, unique=True)
            ),
            "verbs": verbs,
        }
        for key in ("apiGroups", "resources", "resourceNames"):  # must be empty on a non-resource rule
            _put(draw, rule, key, [], where="nonResourceRule")  # the value is the empty list
        return rule
    if draw(st.booleans()):
        return draw(seeded_rules())
    many = draw(st.integers(0, 5)) == 0
    rule = {
        "apiGroups": draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True)),
        "resources": draw(
            st.lists(st.sampled_from(MANY_KINDS), min_size=8, max_size=12, unique=True)
            if many
            else st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=3, unique=True)
        ),
        "verbs": sorted({*verbs, "delete"}) if many else verbs,
    }
    names = draw(st.sampled_from([[], ["edit"], ["view"], ["admin", "other"]]))
    _put(draw, rule, "resourceNames", names, [], where="resourceRule")
    _put(draw, rule, "nonResourceURLs", [], where="resourceRule")  # must be empty on a resource rule
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
    rules = draw(st.lists(policy_rules(cluster_scoped), min_size=1, max_size=3))
    if cluster_scoped and draw(st.integers(0, 5)) == 0:  # AH-RBAC-012 needs both halves of CSR approval
        rules += [draw(seeded_rules(SIGNER_APPROVE)), draw(seeded_rules(CSR_APPROVE))]
    _put(draw, role, "rules", rules, [], where="role")
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
    # (catalogue/pod_security.py, not this module's:
    # tests/unit/test_admission_forms.py::test_scan_reads_null_run_as_fields).
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
        _put(draw, spec, "ephemeralContainers", [], where="pod")  # cannot be set on create
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
        _put(draw, meta, "ownerReferences", [], where="metadata")  # the value is the empty list
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


PROFILE_SUBJECT = {"kind": "User", "name": "admission-differential", "apiGroup": RBAC}


def bound_as(role: dict[str, Any]) -> dict[str, Any]:
    """The binding the role-capabilities profile judges a role as: a Role bound in its namespace, a ClusterRole
    cluster-wide, to one subject, the binding carrying the role's annotations (so the role's exemption is the
    binding's; the audit engine exempts a binding's findings by the binding's own annotations)."""
    cluster = role["kind"] == "ClusterRole"
    metadata: dict[str, Any] = {"name": f"bound-{role['metadata']['name']}"}
    if not cluster:
        metadata["namespace"] = role["metadata"]["namespace"]
    if role["metadata"].get("annotations"):
        metadata["annotations"] = dict(role["metadata"]["annotations"])
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding" if cluster else "RoleBinding",
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC, "kind": role["kind"], "name": role["metadata"]["name"]},
        "subjects": [dict(PROFILE_SUBJECT)],
    }


def engine_verdict(obj: dict[str, Any], context: list[dict[str, Any]], settings_: OperatorSettings) -> set[str]:
    """Rule ids the audit engine reports (not exempted) for the object alone plus the fixed context; for a role
    that is not a default one, with the role-capabilities profile on, also the profile's rule ids the engine
    reports for the role once bound (bound_as)."""
    body = copy.deepcopy(obj)
    if body["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
        body["metadata"]["namespace"] = context[0]["metadata"]["name"]
    snapshot = ClusterSnapshot.from_objects([body, *context])
    findings = run_audit(snapshot, settings_.audit_context(now=datetime.now(UTC)), only=CORE)
    verdict = {f.rule_id for f in findings if not f.exempted}
    profile_on = settings_.admission_role_capabilities != "off"
    if profile_on and body["kind"] in ("Role", "ClusterRole") and not is_bootstrap(body):
        binding = bound_as(body)
        snapshot = ClusterSnapshot.from_objects([body, binding, *context])
        findings = run_audit(snapshot, settings_.audit_context(now=datetime.now(UTC)), only=PROFILE)
        name = binding["metadata"]["name"]
        verdict |= {f.rule_id for f in findings if not f.exempted and f.object.name == name}
    return verdict


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
        self.reached: set[str] = set()  # rule ids the engine reported at least once
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
            self.reached |= engine
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


DIFFERENTIAL_EXAMPLES = 800


# A namespace-level exemption (active, for a family and one rule) for a share of the differential's cases.
NAMESPACE_EXEMPTION = {
    "accesshygiene.io/exempt": "AH-POD, AH-RBAC-016",
    "accesshygiene.io/exempt-owner": "platform",
    "accesshygiene.io/exempt-reason": "legacy namespace",
    "accesshygiene.io/exempt-until": "2999-01-01T00:00:00Z",
}


def test_differential_admission_agrees_with_audit_engine(env: Env, differential: Differential) -> None:
    """Hypothesis-generated objects for every compiled rule, the role-capabilities profile included: the set of
    rule ids the API server warns about equals the set the audit engine reports, for every object (a quarter of
    them in a namespace that carries an exemption annotation, a quarter in one the settings call privileged)."""
    VARIANTS_OFFERED.clear()
    VARIANTS_PRODUCED.clear()
    with env.cluster.api_client() as api:
        name = f"adm-diff-ns-{uuid.uuid4().hex[:6]}"
        exempt_ns = Differential(api, _diff_namespace(api, name, NAMESPACE_EXEMPTION), env.settings)
        privileged = Differential(api, _diff_namespace(api, env.privileged), env.settings)
        sides = [exempt_ns, privileged, differential, differential]

        @settings(max_examples=DIFFERENTIAL_EXAMPLES, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
        @given(ANY_OBJECT, st.integers(0, 3))
        def run(obj: dict[str, Any], where: int) -> None:
            sides[where].check(obj)

        try:
            for rule_id in COMPILED:  # every rule's bad object and good twin, the edges, then the generated ones
                for sample in _bad_good(rule_id):
                    differential.check(sample)
            for sample in _edge_samples():
                differential.check(sample)
            run()
        finally:
            kubernetes.client.CoreV1Api(api).delete_namespace(name)
    cases = differential.cases + exempt_ns.cases + privileged.cases
    flagged = differential.flagged + exempt_ns.flagged + privileged.flagged
    disagreements = differential.disagreements + exempt_ns.disagreements + privileged.disagreements
    reached = differential.reached | exempt_ns.reached | privileged.reached
    print(f"\ndifferential: {cases} cases ({exempt_ns.cases} in the exempted namespace, {privileged.cases} in the "
          f"privileged one), {flagged} flagged by the engine, {len(disagreements)} disagreements; rules never "
          f"flagged: {sorted(set(COMPILED) - reached)}")  # fmt: skip
    assert cases >= DIFFERENTIAL_EXAMPLES // 2
    assert exempt_ns.cases > 0
    assert privileged.cases > 0
    assert flagged > cases // 10  # the generators reach the rules
    assert reached == set(COMPILED)  # ... every one of them (the samples see to that)
    assert not disagreements, yaml.safe_dump(
        [{"object": o, "server": sorted(s), "engine": sorted(e)} for o, s, e in disagreements[:5]]
    )
    # ... and every field they may leave out, set to null or empty was left out, null and empty at least once
    assert not VARIANTS_OFFERED - VARIANTS_PRODUCED, sorted(VARIANTS_OFFERED - VARIANTS_PRODUCED)


# (rule id, what the broken policy is labelled, the variable broken, the text taken out of it, what the control
# generates, a probe the broken policy no longer flags)
BREAKAGES = {
    "AH-POD-002": (
        ("accesshygiene.io/rule", "AH-POD-002"),
        "violation",
        (" || variables.podSpec.?hostIPC.orValue(false) == true", ""),
        workloads,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {**_pod("p")["spec"], "hostIPC": True}},
    ),
    "AH-RBAC-009": (
        ("accesshygiene.io/profile", "role-capabilities"),
        "violation_ah_rbac_009",
        ('["secrets"]', '["secretz"]'),
        roles,
        _role("p", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]),
    ),
}


@pytest.mark.parametrize("rule_id", sorted(BREAKAGES))
def test_differential_catches_a_deliberate_cel_mismatch(env: Env, differential: Differential, rule_id: str) -> None:
    """Negative control: drop hostIPC from AH-POD-002's CEL (a core form), or secrets from AH-RBAC-009's (the
    role-capabilities profile), and the same differential must disagree."""
    (label, value), variable, (old, new), generator, probe = BREAKAGES[rule_id]
    with env.cluster.api_client() as api:
        policy = next(m for m in _desired(env, env.settings) if m["metadata"].get("labels", {}).get(label) == value)
        broken = copy.deepcopy(policy)
        violation = next(v for v in broken["spec"]["variables"] if v["name"] == variable)
        assert old in violation["expression"]
        violation["expression"] = violation["expression"].replace(old, new)
        resources.apply(api, broken)
        try:
            namespace = differential.namespace["metadata"]["name"]
            wait_for(lambda: rule_id not in server_verdict(api, probe, namespace), timeout=30)
            control = Differential(api, differential.namespace, env.settings)

            @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
            @given(generator())
            def run(obj: dict[str, Any]) -> None:
                control.check(obj)

            run()
            print(f"\nnegative control ({rule_id}): {control.cases} cases, {len(control.disagreements)} disagreements")
            assert control.disagreements, "a broken CEL expression went unnoticed"
            assert all(rule_id in engine - server for _, server, engine in control.disagreements)
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
    exactly those the operator's own grant-ceiling check (engine/rbac/grant_ceiling.py) would refuse."""
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


def _desired(env: Env, settings_: OperatorSettings) -> list[dict[str, Any]]:
    """What the operator renders (its parameters observed as its identity)."""
    return desired_admission(settings_, observe_parameters(env.operator, settings_, datetime.now(UTC)))


def _admission_objects(api: kubernetes.client.ApiClient, parameters: bool = True) -> list[str]:
    """Every policy and binding, and (with parameters) the parameter object."""
    config = admission_config(operator_settings())
    found = [
        f"{kind}/{obj['metadata']['name']}"
        for kind in ADMISSION_KINDS
        for obj in resources.list_objects(api, ADMISSION_API_VERSION, kind, label_selector=selector(config))
    ]
    if parameters and resources.get(api, PARAMETERS_API_VERSION, PARAMETERS_KIND, PARAMETERS_NAME) is not None:
        found.append(f"{PARAMETERS_KIND}/{PARAMETERS_NAME}")
    return found


def test_uninstall_by_owner_garbage_collection(crd_installed: Cluster, env: Env) -> None:
    """With an owner ClusterRole (what the chart ships), deleting it (helm uninstall) removes every policy
    and binding; afterwards the test puts the module's policies back."""
    owner = "access-hygiene-admission-test-owner"
    owned = operator_settings(admission_owner_cluster_role=owner)
    with crd_installed.api_client() as api:
        resources.apply(api, _role(owner, [], "ClusterRole"))
        apply_admission(env.operator, owned, datetime.now(UTC))
        live = _admission_objects(api)
        assert len(live) == len(_desired(env, owned))
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
        wait_for(lambda: not _admission_objects(api, parameters=False), timeout=60)
        # The parameter object is not owned (the collector's order could delete it before a denying binding):
        # left behind, inert, bound to nothing.
        assert _admission_objects(api) == [f"{PARAMETERS_KIND}/{PARAMETERS_NAME}"]
        # Reinstalling in the same API server enforces again (no built-in paramKind whose informer would
        # stay stopped, kubernetes/kubernetes#130887).
        apply_admission(env.operator, env.settings, datetime.now(UTC))
        _wait_active(api, env.enforce)


@contextlib.contextmanager
def running_operator(cluster: Cluster, **env: str) -> Iterator[KopfRunner]:
    """The operator in-process (kopf), as its own identity, with admission settings from env."""
    with cluster_operator(cluster.control_plane.operator_kubeconfig, {**OPERATOR_ENV, **env}) as runner:
        yield runner


def _parameters(api: kubernetes.client.ApiClient) -> dict[str, Any]:
    """The parameter object's spec (the policies read it at each request)."""
    found = resources.get(api, PARAMETERS_API_VERSION, PARAMETERS_KIND, PARAMETERS_NAME) or {}
    return dict(found.get("spec") or {})


def _versions(api: kubernetes.client.ApiClient, parameters: bool = True) -> dict[str, tuple[int, dict[str, str]]]:
    """Each admission object's generation (its spec's writes) and annotations (the API server's type checker
    writes the status, so the resourceVersion also moves without the operator); with the parameter object's."""
    config = admission_config(operator_settings())
    versions = {
        f"{kind}/{obj['metadata']['name']}": (obj["metadata"]["generation"], obj["metadata"].get("annotations", {}))
        for kind in ADMISSION_KINDS
        for obj in resources.list_objects(api, ADMISSION_API_VERSION, kind, label_selector=selector(config))
    }
    found = resources.get(api, PARAMETERS_API_VERSION, PARAMETERS_KIND, PARAMETERS_NAME)
    if parameters and found is not None:
        versions[PARAMETERS_KIND] = (found["metadata"]["generation"], found["metadata"].get("annotations", {}))
    return versions


def _exemption(rules: str, until: str) -> dict[str, str]:
    return {
        "accesshygiene.io/exempt": rules,
        "accesshygiene.io/exempt-owner": "team-a",
        "accesshygiene.io/exempt-reason": "testing admission's time",
        "accesshygiene.io/exempt-until": until,
    }


def test_operator_follows_events_and_expiries_writes_nothing_idle_and_switches_off(
    crd_installed: Cluster, env: Env
) -> None:
    """The controller: start-up install (idempotent over what is there); an exempted Deployment reaches the
    owner-exemption parameters on its event; an exemption expiry moves the floor at the expiry (a timer, no
    period); each is one write of the parameter object, no policy is rewritten; idle, nothing is written; a start
    with admission off removes everything."""
    deployment_name = f"exempt-{uuid.uuid4().hex[:6]}"
    account = f"expiring-{uuid.uuid4().hex[:6]}"
    with crd_installed.api_client() as api:
        delete_admission(api, env.settings)
        with running_operator(crd_installed, ACCESS_HYGIENE_ADMISSION_ENABLED="true"):
            wait_for(lambda: len(_admission_objects(api)) == len(_desired(env, env.settings)), timeout=60)
            policies = _versions(api, parameters=False)
            deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": deployment_name, "annotations": _exemption("AH-POD-003", "2999-01-01")},
                          "spec": {"replicas": 0, "selector": {"matchLabels": {"app": deployment_name}},
                                   "template": {"metadata": {"labels": {"app": deployment_name}},
                                                "spec": {"containers": [{"name": "app", "image": "x"}]}}}}  # fmt: skip
            assert env.admin.create(deployment, env.audit).returncode == 0
            key = f"Deployment.{env.audit}.{deployment_name}"
            wait_for(lambda: key in _parameters(api).get("ownerExemptions", {}), timeout=10)
            until = stamp(datetime.now(UTC) + timedelta(seconds=4))
            sa = {"apiVersion": "v1", "kind": "ServiceAccount",
                  "metadata": {"name": account, "annotations": _exemption("AH-SA-001", until)}}  # fmt: skip
            assert env.admin.create(sa, env.audit).returncode == 0

            def floor_moved() -> datetime | None:
                return datetime.now(UTC) if _parameters(api).get("floor") == until else None

            moved = wait_for(floor_moved, timeout=20, interval=0.1)
            late = (moved - datetime.fromisoformat(until)).total_seconds()
            print(f"\nfloor written {late:.2f} s after the expiry")
            # At the expiry, not on a period (the refresh it replaces ran every 60 s); generous for a loaded machine.
            assert late < 5.0, f"the floor moved {late:.2f} s after the expiry"
            assert _versions(api, parameters=False) == policies  # no policy rewritten: parameters only
            before = _versions(api)
            time.sleep(5)
            assert _versions(api) == before  # idle: no write
        for kind, name in (("deployment", deployment_name), ("serviceaccount", account)):
            env.admin.run("delete", kind, name, f"--namespace={env.audit}", "--wait=false")
        with running_operator(crd_installed, ACCESS_HYGIENE_ADMISSION_ENABLED="false"):
            wait_for(lambda: not _admission_objects(api), timeout=60)
        apply_admission(env.operator, env.settings, datetime.now(UTC))


def test_unchanged_parameters_are_not_written(env: Env) -> None:
    """Re-computing with unchanged state writes nothing (server-side apply of identical content is still a
    request: it is skipped), and nothing the API server stores changes."""
    writer = AdmissionWriter()
    first = apply_admission(env.operator, env.settings, datetime.now(UTC), writer)
    assert first.applied == len(_desired(env, env.settings))  # a fresh writer (a start) writes everything once
    with env.cluster.api_client() as api:
        before = _versions(api)
        again = apply_admission(env.operator, env.settings, datetime.now(UTC), writer)
        assert (again.applied, again.pruned, writer.writes) == (0, 0, first.applied)
        assert _versions(api) == before


def test_owner_exemption_expires_at_create_without_a_write(env: Env) -> None:
    """CREATE is judged at the request's own time (creationTimestamp, set by the API server): a policy written
    once with an owner exemption expiring in a few seconds admits the owned pod before and denies it after, with
    no write in between."""
    owner = f"legacy-{uuid.uuid4().hex[:6]}"
    pod, _ = _bad_good("AH-POD-003")
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": str(uuid.uuid4())}
    ]
    parameters = observe_parameters(env.operator, env.settings, datetime.now(UTC))
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
    entries = {f"ReplicaSet.{env.enforce}.{owner}": [{"rules": "AH-POD-003", "until": stamp(until)}]}
    parameters = dataclasses.replace(parameters, owner_exemptions={**parameters.owner_exemptions, **entries})
    writer = AdmissionWriter()
    try:
        desired = desired_admission(env.settings, parameters)
        writer.write(env.operator, env.settings, desired, prune=False, now=datetime.now(UTC))
        with env.cluster.api_client() as api:
            version = _versions(api)

            def admitted() -> bool:
                try:
                    _dry_run(api, pod, env.enforce)
                except kubernetes.client.ApiException:
                    return False
                return True

            wait_for(admitted, timeout=6)  # the API server has the exemption (and it has not expired yet)
            wait_for(lambda: datetime.now(UTC) > until + timedelta(seconds=1), timeout=15)
            with pytest.raises(kubernetes.client.ApiException) as denied:
                _dry_run(api, pod, env.enforce)
            assert "AH-POD-003" in (denied.value.body or "")
            assert _versions(api) == version  # no write in between
    finally:
        apply_admission(env.operator, env.settings, datetime.now(UTC))


def test_operator_writes_an_allowed_grant_under_the_deny_profile(crd_installed: Cluster, env: Env) -> None:
    """With the profile denying, an admin cannot write a Role that reads all secrets in an enforce namespace, but
    the operator still writes the one an AccessPolicy grants when the operator allows secrets-read: the forms on
    roles skip the operator's own requests (the AccessPolicy guards checked the grant)."""
    reads_secrets = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    name = f"reads-secrets-{uuid.uuid4().hex[:6]}"
    with crd_installed.api_client() as api:
        resources.apply(api, render_grant_ceiling_role(CEILING, [*WIDER_CEILING, *reads_secrets]))
        try:
            with running_operator(crd_installed, ACCESS_HYGIENE_ADMISSION_ENABLED="true",
                                  ACCESS_HYGIENE_ADMISSION_ROLE_CAPABILITIES="deny",
                                  ACCESS_HYGIENE_ALLOWED_SENSITIVE_CAPABILITIES='["secrets-read"]'):  # fmt: skip

                def operator_applied() -> bool:  # its ceiling guard no longer refuses secrets-read
                    guard = resources.get(api, ADMISSION_API_VERSION, "ValidatingAdmissionPolicy",
                                          "access-hygiene-accesspolicy-ceiling") or {}  # fmt: skip
                    validations = guard.get("spec", {}).get("validations", [])
                    return bool(validations) and not any("secrets-read" in v.get("message", "") for v in validations)

                def refused() -> bool:
                    result = _create_result(env, _role(f"{name}-by-hand", reads_secrets), env.enforce)
                    return result.returncode != 0 and "AH-RBAC-009" in result.stderr

                wait_for(operator_applied, timeout=60)
                wait_for(lambda: _create_result(env, _access_policy(name, reads_secrets), env.enforce).returncode == 0)
                wait_for(refused, timeout=30)
                policy = _access_policy(name, reads_secrets)
                policy["spec"]["mode"] = "enforce"
                created = env.admin.create(policy, env.enforce)
                assert created.returncode == 0, created.stderr
                role = wait_for(
                    lambda: resources.get(api, f"{RBAC}/v1", "Role", f"access-hygiene-{name}", namespace=env.enforce),
                    timeout=60,
                )
                assert role["rules"][0]["resources"] == ["secrets"]
                deleted = env.admin.run("delete", "accesspolicy", name, f"--namespace={env.enforce}", "--wait=false")
                assert deleted.returncode == 0, deleted.stderr
                wait_for(  # while the operator runs: it removes its finalizer
                    lambda: resources.get(api, "accesshygiene.io/v1alpha1", "AccessPolicy", name, env.enforce) is None,
                    timeout=90,
                )
        finally:
            resources.apply(api, render_grant_ceiling_role(CEILING, WIDER_CEILING))
            apply_admission(env.operator, env.settings, datetime.now(UTC))


def test_switch_off_removes_everything(crd_installed: Cluster, env: Env) -> None:
    with crd_installed.api_client() as api:
        assert _admission_objects(api)
        removed = delete_admission(api, env.settings)
        assert removed == len(_desired(env, env.settings))
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

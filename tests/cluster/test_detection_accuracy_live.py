"""Issue 14 on the real control plane.

- Each permission rule's verdict agrees with SubjectAccessReview: the rule fixtures (bad and good) are
  loaded into kube-apiserver, the rule runs on the live snapshot, and for every binding of the fixture the
  rule flags it exactly when kube-apiserver allows one of the rule's probe requests to its subjects.
- An offline scan of a manifest set (`scan -f`: built-in roles from the shipped data) and a live scan of the
  same objects applied to kube-apiserver give the same RBAC and ServiceAccount findings.
"""

import copy
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from access_hygiene.clock import SYSTEM_CLOCK
from access_hygiene.engine.audit.runner import run_audit
from access_hygiene.engine.catalogue.binding_walk import BINDING_RULES as ALL_BINDING_RULES
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import CLUSTER_SCOPED_KINDS, ClusterSnapshot
from access_hygiene.engine.rbac.permissions import UserInfo, is_bootstrap
from access_hygiene.k8s import resources
from access_hygiene.k8s.snapshot_loader import load_snapshot
from access_hygiene.models.findings import Finding, Subject
from tests.cluster.conftest import wait_for_authorizer
from tests.cluster.test_rbac_differential import subject_access_review
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

FIXTURES = Path(__file__).parents[1] / "unit" / "fixtures"
RBAC = "rbac.authorization.k8s.io"
WRITE = ("create", "update", "patch", "delete", "deletecollection")
TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}


@dataclass(frozen=True)
class Probe:
    verb: str
    group: str
    resource: str
    subresource: str = ""
    cluster_scoped: bool = False
    name: str = ""


def _probes(verbs: tuple[str, ...], group: str, resources_: tuple[str, ...], **kw: Any) -> list[Probe]:
    return [Probe(v, group, *r.partition("/")[::2], **kw) for v in verbs for r in resources_]


PROBES: dict[str, list[Probe]] = {
    "AH-RBAC-015": [
        Probe("create", "", "pods"),
        *_probes(("create", "update", "patch"), "apps", ("deployments", "statefulsets", "daemonsets", "replicasets")),
        *_probes(("create", "update", "patch"), "batch", ("jobs", "cronjobs")),
        *_probes(("create", "update", "patch"), "", ("replicationcontrollers",)),
    ],
    "AH-RBAC-025": _probes(WRITE, "", ("secrets",)),
    "AH-RBAC-026": [
        *_probes(WRITE, "networking.k8s.io", ("networkpolicies", "ingresses")),
        *_probes(WRITE, "", ("services", "endpoints")),
        *_probes(WRITE, "discovery.k8s.io", ("endpointslices",)),
    ],
    "AH-RBAC-027": [Probe("create", "", "pods", "portforward")],
    "AH-RBAC-028": [
        *_probes(("update", "patch"), RBAC, ("rolebindings",)),
        *_probes(("update", "patch"), RBAC, ("clusterrolebindings",), cluster_scoped=True),
    ],
}
# AH-RBAC-029 (broad delete): flagged exactly when kube-apiserver allows delete(collection) on >= 10 of these.
DELETE_VERBS = ("delete", "deletecollection")
DELETABLE = [
    ("", r) for r in ("pods", "services", "configmaps", "secrets", "persistentvolumeclaims", "serviceaccounts",
                      "endpoints", "events", "limitranges", "resourcequotas", "replicationcontrollers")
] + [("apps", r) for r in ("deployments", "statefulsets", "daemonsets", "replicasets")] + [
    ("batch", "jobs"), ("batch", "cronjobs"), ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "networkpolicies"), (RBAC, "roles"), (RBAC, "rolebindings"), ("example.com", "widgets"),
]  # fmt: skip
# AH-RBAC-024 (latent): requests kube-apiserver allows once a role is bound when a binding rule flags it (rule ids
# without an entry: AH-RBAC-029 counts kinds, its own test above holds it to SubjectAccessReview).
RULE_PROBES: dict[str, list[Probe]] = {
    **PROBES,
    "AH-RBAC-001": [Probe("escalate", RBAC, "clusterroles", cluster_scoped=True)],
    "AH-RBAC-005": [*_probes(("impersonate",), "", ("users", "groups", "serviceaccounts"), cluster_scoped=True),
                    Probe("impersonate", "", "users", cluster_scoped=True, name="jane")],  # one user counts too
    "AH-RBAC-006": _probes(("escalate",), RBAC, ("roles", "clusterroles")),
    "AH-RBAC-007": [*_probes(("bind",), RBAC, ("roles", "clusterroles")),
                    Probe("bind", RBAC, "clusterroles", name="cluster-admin")],
    "AH-RBAC-008": [Probe("create", "", "serviceaccounts", "token"), *_probes(("create", "update", "patch"), "",
                                                                             ("secrets",))],
    "AH-RBAC-009": _probes(("get", "list", "watch"), "", ("secrets",)),
    "AH-RBAC-010": _probes(("get", "create"), "", ("nodes/proxy",), cluster_scoped=True),
    "AH-RBAC-011": _probes(("create", "update", "patch", "delete"), "admissionregistration.k8s.io",
                           ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"), cluster_scoped=True),
    "AH-RBAC-012": [Probe("approve", "certificates.k8s.io", "signers", cluster_scoped=True,
                          name="kubernetes.io/kube-apiserver-client")],
    "AH-RBAC-013": _probes(("create",), "", ("pods/exec", "pods/attach")),
    "AH-RBAC-014": _probes(("update", "patch"), "", ("pods/ephemeralcontainers",)),
    "AH-RBAC-019": _probes(WRITE, "", ("configmaps",)),  # in kube-system (PROBE_NAMESPACE)
    "AH-RBAC-020": [Probe("create", "", "persistentvolumes", cluster_scoped=True)],
    "AH-RBAC-021": [*_probes(("delete", "deletecollection"), "", ("events",)),
                    *_probes(("delete", "deletecollection"), "events.k8s.io", ("events",))],
}  # fmt: skip
PROBE_NAMESPACE = {"AH-RBAC-019": "kube-system"}
LATENT_TRIGGERED = re.compile(r"(AH-RBAC-\d{3}): ")
# Bindings a rule deliberately leaves to another rule although kube-apiserver allows the probe.
LEFT_TO_OTHER_RULES = {("AH-RBAC-025", "bob-creates-secrets")}  # AH-RBAC-008 reports cluster-wide writes


def fixture_objects(path: Path, run: str) -> list[dict[str, Any]]:
    """The fixture's objects, completed so the API accepts them (selectors, serviceName), minus default
    roles (kube-apiserver owns those), cluster-scoped names suffixed with `run`."""
    objects = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or is_bootstrap(doc):
            continue
        obj = copy.deepcopy(doc)
        meta = obj["metadata"]
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = f"{meta['name']}-{run}"
        if obj["kind"].endswith("Binding") and obj["roleRef"]["kind"] == "ClusterRole":
            builtin = obj["roleRef"]["name"] in ("cluster-admin", "admin", "edit", "view")
            obj["roleRef"]["name"] += "" if builtin else f"-{run}"
        if obj["kind"] in TEMPLATE_KINDS:
            template = obj["spec"]["template"]
            labels = template.setdefault("metadata", {}).setdefault("labels", {"app": meta["name"]})
            obj["spec"].setdefault("selector", {"matchLabels": labels})
            if obj["kind"] == "StatefulSet":
                obj["spec"].setdefault("serviceName", meta["name"])
        objects.append(obj)
    return objects


class Loaded:
    """Objects applied to the cluster (their namespaces created), deleted on exit."""

    def __init__(self, api: Any, objects: list[dict[str, Any]]) -> None:
        self.api, self.objects = api, objects
        self.namespaces = sorted({o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")})

    def __enter__(self) -> "Loaded":
        for namespace in self.namespaces:
            resources.apply(self.api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for obj in sorted(self.objects, key=lambda o: o["kind"] != "ServiceAccount"):
            resources.apply(self.api, obj)
        wait_for_authorizer(self.api)  # the SubjectAccessReviews after this see what was just applied
        return self

    def __exit__(self, *_: object) -> None:
        for obj in reversed(self.objects):
            meta = obj["metadata"]
            resources.delete(self.api, obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace", ""))


@pytest.fixture(scope="module")
def admin_api(cluster: Cluster) -> Iterator[Any]:
    with cluster.api_client() as api:
        yield api


def _allowed(api: Any, subject: Subject, probe: Probe, namespace: str) -> bool:
    attributes = {"namespace": "" if probe.cluster_scoped else namespace, "verb": probe.verb, "group": probe.group,
                  "resource": probe.resource, "subresource": probe.subresource, "name": probe.name}  # fmt: skip
    return subject_access_review(api, UserInfo.of(subject), attributes)


def _fixture_subjects(binding: dict[str, Any]) -> list[Subject]:
    namespace = binding["metadata"].get("namespace", "")
    subjects = []
    for raw in binding.get("subjects") or []:
        if raw["kind"] == "ServiceAccount":
            subjects.append(
                Subject(kind="ServiceAccount", name=raw["name"], namespace=raw.get("namespace") or namespace)
            )
        else:
            subjects.append(Subject(kind=raw["kind"], name=raw["name"]))
    return subjects


def _live_findings(api: Any, rule_id: str) -> list[Finding]:
    return run_audit(load_snapshot(api), AuditContext(now=SYSTEM_CLOCK.now()), only=[rule_id])


BINDING_RULES = ["AH-RBAC-015", "AH-RBAC-025", "AH-RBAC-026", "AH-RBAC-027", "AH-RBAC-028", "AH-RBAC-029"]


@pytest.mark.parametrize("variant", ["bad", "good"])
@pytest.mark.parametrize("rule_id", BINDING_RULES)
def test_binding_rule_agrees_with_subject_access_review(admin_api: Any, rule_id: str, variant: str) -> None:
    run = uuid.uuid4().hex[:6]
    objects = fixture_objects(FIXTURES / "rbac" / rule_id / f"{variant}.yaml", run)
    bindings = [o for o in objects if o["kind"].endswith("Binding")]
    with Loaded(admin_api, objects):
        findings = _live_findings(admin_api, rule_id)
        flagged = {(f.object.kind, f.object.namespace, f.object.name, str(f.subject)) for f in findings}
        checked = []
        for binding in bindings:
            namespace = binding["metadata"].get("namespace", "")
            for subject in _fixture_subjects(binding):
                if subject.name.startswith("system:kube-"):
                    continue  # excluded subjects are not judged
                key = (binding["kind"], namespace, binding["metadata"]["name"], str(subject))
                scope = namespace or "team"
                if rule_id == "AH-RBAC-029":
                    allowed = sum(
                        any(_allowed(admin_api, subject, Probe(verb, g, r), scope) for verb in DELETE_VERBS)
                        for g, r in DELETABLE
                    )
                    expected = allowed >= 10
                else:
                    expected = any(_allowed(admin_api, subject, probe, scope) for probe in PROBES[rule_id])
                if (rule_id, binding["metadata"]["name"].removesuffix(f"-{run}")) in LEFT_TO_OTHER_RULES:
                    assert expected, key
                    assert key not in flagged
                    continue
                checked.append(key)
                assert (key in flagged) == expected, (
                    f"{rule_id} {variant}: {key} engine={key in flagged} SAR={expected}"
                )
    assert checked
    if variant == "bad":
        assert all(key in flagged for key in checked)


def _wait_for_aggregation(api: Any, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (resources.get(api, f"{RBAC}/v1", "ClusterRole", name) or {}).get("rules"):
        assert time.monotonic() < deadline, f"ClusterRole {name} never aggregated"
        time.sleep(0.3)


@pytest.mark.parametrize("variant", ["bad", "good"])
def test_latent_roles_agree_with_subject_access_review_once_bound(admin_api: Any, variant: str) -> None:
    """AH-RBAC-024 names, for an unbound role, exactly the binding rules that flag the role's binding once it
    exists (issue 25 item 17: every capability rule), and kube-apiserver then allows the bound probe user one of
    each named rule's requests; a role that is not latent gets none of them (bound roles and aggregated sources
    are not latent)."""
    run = uuid.uuid4().hex[:6]
    objects = fixture_objects(FIXTURES / "rbac" / "AH-RBAC-024" / f"{variant}.yaml", run)
    roles = [o for o in objects if o["kind"] in ("Role", "ClusterRole")]
    bound = {o["roleRef"]["name"] for o in objects if o["kind"].endswith("Binding")}
    with Loaded(admin_api, objects):
        for role in roles:
            if role.get("aggregationRule"):
                _wait_for_aggregation(admin_api, role["metadata"]["name"])
        latent = {(f.object.kind, f.object.name): f for f in _live_findings(admin_api, "AH-RBAC-024")}
        probe_bindings = []
        for role in roles:
            meta = role["metadata"]
            user = f"probe-{meta['name'][:40]}-{run}"
            kind = "RoleBinding" if role["kind"] == "Role" else "ClusterRoleBinding"
            probe_bindings.append({
                "apiVersion": f"{RBAC}/v1", "kind": kind,
                "metadata": {"name": f"probe-{meta['name'][:40]}-{run}", **({"namespace": meta["namespace"]}
                                                                          if kind == "RoleBinding" else {})},
                "roleRef": {"apiGroup": RBAC, "kind": role["kind"], "name": meta["name"]},
                "subjects": [{"kind": "User", "name": user, "apiGroup": RBAC}],
            })  # fmt: skip
        with Loaded(admin_api, probe_bindings):
            ctx = AuditContext(now=SYSTEM_CLOCK.now())
            effective = run_audit(load_snapshot(admin_api), ctx, only=sorted(ALL_BINDING_RULES))
            checked = 0
            for role in roles:
                meta = role["metadata"]
                labels = meta.get("labels") or {}
                aggregated = any(key.endswith(("aggregate-to-admin", "aggregate-to-monitoring")) for key in labels)
                if meta["name"] in bound or aggregated:
                    continue
                user = Subject(kind="User", name=f"probe-{meta['name'][:40]}-{run}")
                finding = latent.get((role["kind"], meta["name"]))
                named = set(LATENT_TRIGGERED.findall(finding.message)) if finding else set()
                once_bound = {f.rule_id for f in effective if f.subject == user}
                assert named == once_bound, f"{meta['name']}: latent={sorted(named)} once bound={sorted(once_bound)}"
                namespace = meta.get("namespace") if role["kind"] == "Role" else "team"
                for rule_id, probes in RULE_PROBES.items():
                    where = PROBE_NAMESPACE.get(rule_id, namespace)
                    allowed = any(_allowed(admin_api, user, probe, where) for probe in probes)
                    if rule_id in named:
                        assert allowed, f"{meta['name']}: latent {rule_id} but SAR allows none of its requests"
                    elif not named:
                        assert not allowed, f"{meta['name']}: not latent but SAR allows a {rule_id} request"
                checked += 1
    assert checked >= (9 if variant == "bad" else 3)


TAKEOVER_PROBES = [
    Probe("get", "", "secrets", cluster_scoped=True),  # all secrets: a cluster-wide list/get
    *_probes(("impersonate",), "", ("users", "groups", "serviceaccounts"), cluster_scoped=True),
    *_probes(("escalate", "bind"), RBAC, ("clusterroles",), cluster_scoped=True),
    *_probes(("get", "create"), "", ("nodes/proxy",), cluster_scoped=True),
]


@pytest.mark.parametrize("variant", ["bad", "good"])
def test_attack_paths_agree_with_subject_access_review(admin_api: Any, variant: str) -> None:
    """AH-SA-011 flags a workload exactly when its ServiceAccount holds a takeover permission (checked by
    SubjectAccessReview cluster-wide, in the workload's namespace and in kube-system) and mounts a token."""
    run = uuid.uuid4().hex[:6]
    objects = fixture_objects(FIXTURES / "hygiene" / "AH-SA-011" / f"{variant}.yaml", run)
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet")]
    automount_off = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects
                     if o["kind"] == "ServiceAccount" and o.get("automountServiceAccountToken") is False}  # fmt: skip
    with Loaded(admin_api, objects):
        flagged = {(f.object.kind, f.object.namespace, f.object.name) for f in _live_findings(admin_api, "AH-SA-011")}
        for workload in workloads:
            meta = workload["metadata"]
            template = workload["spec"]["template"]["spec"]
            sa = Subject(kind="ServiceAccount", name=template["serviceAccountName"], namespace=meta["namespace"])
            takeover = any(_allowed(admin_api, sa, p, meta["namespace"]) for p in TAKEOVER_PROBES) or any(
                _allowed(admin_api, sa, p, "kube-system") for p in PROBES["AH-RBAC-015"]
            )
            if meta["namespace"] == "kube-system":
                assert takeover, meta["name"]
                assert (workload["kind"], "kube-system", meta["name"]) not in flagged  # exempt namespace
                continue
            expected = takeover and (meta["namespace"], sa.name) not in automount_off
            actual = (workload["kind"], meta["namespace"], meta["name"]) in flagged
            assert actual == expected, f"{workload['kind']} {meta['name']}: engine={actual} SAR={expected}"


# --- offline == live ---------------------------------------------------------------------------------

PARITY_SOURCES = [
    "rbac/AH-RBAC-024/bad.yaml", "rbac/AH-RBAC-025/bad.yaml", "rbac/AH-RBAC-026/bad.yaml",
    "rbac/AH-RBAC-027/bad.yaml", "rbac/AH-RBAC-028/bad.yaml", "rbac/AH-RBAC-029/bad.yaml",
    "hygiene/AH-SA-010/bad.yaml", "hygiene/AH-SA-011/bad.yaml",
]  # fmt: skip


def _builtin_bindings(run: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{user}-{role}", "namespace": "team"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": f"{user}-{run}", "apiGroup": RBAC}],
        }
        for user, role in (("alice", "edit"), ("bob", "admin"), ("carol", "view"))
    ] + [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "db", "namespace": "data"}}]


def _comparable(findings: list[Finding], objects: list[dict[str, Any]]) -> set[tuple[str, ...]]:
    # kube-apiserver drops metadata.namespace from cluster-scoped objects (a fixture's chart-like ClusterRole has one)
    keys = {(o["kind"], "" if o["kind"] in CLUSTER_SCOPED_KINDS else o["metadata"].get("namespace", ""),
             o["metadata"]["name"]) for o in objects}  # fmt: skip
    return {
        (f.rule_id, f.severity.value, f.object.kind, f.namespace, f.object.name, str(f.subject or ""), f.message)
        for f in findings
        if f.rule_id.startswith(("AH-RBAC-", "AH-SA-")) and (f.object.kind, f.object.namespace, f.object.name) in keys
    }


def test_offline_and_live_scans_of_the_same_objects_agree(fresh_cluster: Cluster) -> None:
    # A pristine API server: other modules add aggregated ClusterRoles to admin/edit/view in the shared one.
    with fresh_cluster.api_client() as admin_api:
        _compare_offline_and_live(admin_api)


def _compare_offline_and_live(admin_api: Any) -> None:
    run = uuid.uuid4().hex[:6]
    objects = [o for source in PARITY_SOURCES for o in fixture_objects(FIXTURES / source, run)]
    objects += _builtin_bindings(run)
    offline = run_audit(ClusterSnapshot.from_objects(copy.deepcopy(objects)), AuditContext(now=SYSTEM_CLOCK.now()))
    with Loaded(admin_api, objects):
        for role in objects:
            if role["kind"] == "ClusterRole" and role.get("aggregationRule"):
                _wait_for_aggregation(admin_api, role["metadata"]["name"])
        live = run_audit(load_snapshot(admin_api), AuditContext(now=SYSTEM_CLOCK.now()))
    offline_keys, live_keys = _comparable(offline, objects), _comparable(live, objects)
    assert offline_keys == live_keys, (
        f"offline only: {sorted(offline_keys - live_keys)}\nlive only: {sorted(live_keys - offline_keys)}"
    )
    rule_ids = {key[0] for key in offline_keys}
    # The built-in roles are resolved offline (edit/admin bindings have findings), and every new rule fires.
    assert {"AH-RBAC-009", "AH-RBAC-013", "AH-RBAC-024", "AH-RBAC-029", "AH-SA-010", "AH-SA-011"} <= rule_ids
    assert any(key[4] == "alice-edit" for key in offline_keys)

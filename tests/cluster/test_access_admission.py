"""Just-in-time access admission on the real control plane, as real token identities (ServiceAccount
TokenRequest tokens, through the real kubectl and the `access-hygiene access` CLI).

Four people, each a ServiceAccount of a `people` namespace: alice requests, bob approves (he may `bind` the
ClusterRole `view` in the target namespace), carol is a listed approver who may not bind it, dave is nobody. Every
refusal is checked with its exact message, and every accepted path is created for real. The policies are applied
by k8s/admission.py as the operator's identity, as the operator does at start. The operator's resolution of a
request (status.state, status.eligibility) is written here as the operator's identity: the grant itself is the
operator's part (tests of engine/access and the flow test).
"""

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from access_hygiene.k8s import resources
from access_hygiene.k8s.admission import apply_access_admission
from access_hygiene.k8s.crds import install_crd
from access_hygiene.localcluster.controlplane import OPERATOR_USER
from access_hygiene.models.crd import ACCESS_KINDS
from access_hygiene.render.access_admission import (
    APPROVAL_POLICY,
    APPROVER_POLICY,
    ELIGIBILITY_POLICY,
    REQUEST_IMMUTABLE_POLICY,
    REQUEST_STATUS_POLICY,
    REQUESTER_POLICY,
)
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role
from tests.cluster.conftest import OPERATOR_ENV, running_operator, wait_for, wait_for_authorizer
from tests.conftest import REPO_ROOT, Cluster

pytestmark = pytest.mark.cluster
GROUP_VERSION = "accesshygiene.io/v1alpha1"
CLI = [sys.executable, "-m", "access_hygiene.cli.main", "access"]


@dataclass
class Person:
    name: str
    username: str
    kubeconfig: Path
    kubectl: str

    def run(self, *args: str, manifest: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        stdin = yaml.safe_dump(manifest) if manifest is not None else None
        command = [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)

    def create(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.run("create", "-f", "-", "-o", "json", manifest=manifest)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [*CLI, *args, f"--kubeconfig={self.kubeconfig}"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Env:
    cluster: Cluster
    target: str  # where access is requested
    other: str  # a namespace the eligibility does not list
    people: dict[str, Person]
    eligibility: str  # ClusterRole view in `target`, approvers bob, carol and alice, no self-approval
    self_service: str  # the same with selfApproval: true and no approvers


def _denied(result: subprocess.CompletedProcess[str], policy: str, message: str) -> None:
    assert result.returncode != 0, result.stdout
    expected = f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: {message}"
    assert expected in result.stderr, result.stderr


def _admitted(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)) if result.stdout.startswith("{") else {}


def _person(cluster: Cluster, namespace: str, name: str, kubectl: str) -> Person:
    with cluster.api_client() as api:
        core: Any = kubernetes.client.CoreV1Api(api)
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        token = core.create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 3600}})
    username = f"system:serviceaccount:{namespace}:{name}"
    workdir = cluster.control_plane.workdir
    assert workdir is not None
    path = workdir / f"kubeconfig-jit-{name}-{uuid.uuid4().hex[:6]}"
    path.write_text(cluster.control_plane.render_kubeconfig(token.status.token, username))
    return Person(name, username, path, kubectl)


def _rbac(api: kubernetes.client.ApiClient, namespace: str, people: list[Person], bob: Person) -> None:
    """Everyone may create and edit requests and approvals (so admission, not RBAC, is what refuses), and even
    write request status; only bob may bind the ClusterRole view here."""
    rules = [
        {
            "apiGroups": ["accesshygiene.io"],
            "resources": ["accessrequests", "accessapprovals", "accessrequests/status"],
            "verbs": ["get", "list", "watch", "create", "update", "patch"],
        }
    ]
    subjects = [{"kind": "User", "name": p.username} for p in people]
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role"}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding"}
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role"}
    resources.apply(api, {**role, "metadata": {"name": "jit-users", "namespace": namespace}, "rules": rules})
    resources.apply(
        api,
        {**binding, "metadata": {"name": "jit-users", "namespace": namespace}, "roleRef": {**ref, "name": "jit-users"},
         "subjects": subjects},
    )  # fmt: skip
    bind_view = [
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "resourceNames": ["view"],
         "verbs": ["bind"]}
    ]  # fmt: skip
    resources.apply(api, {**role, "metadata": {"name": "bind-view", "namespace": namespace}, "rules": bind_view})
    resources.apply(
        api,
        {**binding, "metadata": {"name": "bind-view", "namespace": namespace}, "roleRef": {**ref, "name": "bind-view"},
         "subjects": [{"kind": "User", "name": bob.username}]},
    )  # fmt: skip


def _eligibility(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": "AccessEligibility", "metadata": {"name": name}, "spec": spec}


def request_manifest(env: Env, person: Person, name: str, **overrides: Any) -> dict[str, Any]:
    namespace = overrides.pop("namespace", env.target)
    spec = {
        "eligibility": env.eligibility,
        "requester": {"username": person.username},
        "duration": "30m",
        "reason": "incident 42",
        **overrides,
    }
    return {"apiVersion": GROUP_VERSION, "kind": "AccessRequest", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}  # fmt: skip


def approval_manifest(
    env: Env, approver: Person, request: str, decision: str = "Approve", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "AccessApproval",
        "metadata": {"generateName": f"{request}-", "namespace": env.target},
        "spec": {"request": request, "approver": {"username": approver.username}, "decision": decision, **spec},
    }


def resolve(env: Env, request: str, state: str = "Pending", eligibility: str = "") -> None:
    """What the operator writes on a request it has checked: its state and the eligibility resolved."""
    elig = eligibility or env.eligibility
    people = env.people
    if elig == env.eligibility:
        resolved = {
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "approvers": [{"kind": "User", "name": people[p].username} for p in ("bob", "carol", "alice")],
            "selfApproval": False,
        }
    else:
        resolved = {"roleRef": {"kind": "ClusterRole", "name": "view"}, "approvers": [], "selfApproval": True}
    path = f"/apis/{GROUP_VERSION}/namespaces/{env.target}/accessrequests/{request}/status"
    body = {"status": {"state": state, "role": "ClusterRole/view", "eligibility": resolved}}
    operator = kubernetes.config.new_client_from_config(config_file=str(env.cluster.control_plane.operator_kubeconfig))
    with operator:
        answer = resources.request(operator, "PATCH", path, body=body, content_type="application/merge-patch+json")
    assert answer["status"]["eligibility"] == resolved, "the CRD's status schema keeps status.eligibility"


def _wait_for_policies(env: Env) -> None:
    """kube-apiserver loads new policies within about a second: poll with a request for someone else."""
    alice, bob = env.people["alice"], env.people["bob"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = alice.run("create", "--dry-run=server", "-f", "-", manifest=request_manifest(env, bob, "probe"))
        if probe.returncode != 0 and REQUESTER_POLICY in probe.stderr:
            return
        time.sleep(0.3)
    pytest.fail("the JIT admission policies did not take effect within 30 s")


@pytest.fixture(scope="module")
def env(cluster: Cluster) -> Iterator[Env]:
    from tests.cluster.test_admission import kubectl_binary

    suffix = uuid.uuid4().hex[:6]
    kubectl = kubectl_binary(cluster.control_plane.bin_dir)
    target, other, people_ns = f"jit-{suffix}", f"jit-other-{suffix}", f"jit-people-{suffix}"
    with cluster.api_client() as api:
        for definition in ACCESS_KINDS:
            install_crd(api, yaml.safe_load((REPO_ROOT / "crds" / definition.file_name).read_text()))
        for namespace in (target, other, people_ns):
            resources.apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        people = {name: _person(cluster, people_ns, name, kubectl) for name in ("alice", "bob", "carol", "dave")}
        for namespace in (target, other):
            _rbac(api, namespace, list(people.values()), people["bob"])
        # Every person's RBAC in the authorizer's cache: the tests tell admission's refusals from RBAC's by message,
        # and _wait_for_policies below probes as alice only.
        wait_for_authorizer(api)
        eligibility, self_service = f"view-{suffix}", f"self-view-{suffix}"

        def user(name: str) -> dict[str, str]:
            return {"kind": "User", "name": people[name].username}

        resources.request(api, "POST", f"/apis/{GROUP_VERSION}/accesseligibilities", body=_eligibility(eligibility, {
            "subjects": [user("alice"), user("bob")], "roleRef": {"kind": "ClusterRole", "name": "view"},
            "namespaces": [target], "maxDuration": "1h", "approvers": [user("bob"), user("carol"), user("alice")],
        }))  # fmt: skip
        resources.request(api, "POST", f"/apis/{GROUP_VERSION}/accesseligibilities", body=_eligibility(self_service, {
            "subjects": [user("alice")], "roleRef": {"kind": "ClusterRole", "name": "view"},
            "namespaces": [target], "maxDuration": "1h", "selfApproval": True,
        }))  # fmt: skip
    operator = kubernetes.config.new_client_from_config(config_file=str(cluster.control_plane.operator_kubeconfig))
    with operator:
        assert apply_access_admission(operator) == 14  # 6 policies, their bindings, the creator stamp and its binding
    environment = Env(cluster, target, other, people, eligibility, self_service)
    _wait_for_policies(environment)
    yield environment
    with cluster.api_client() as api:
        for namespace in (target, other, people_ns):
            resources.delete(api, "v1", "Namespace", namespace)
        for name in (eligibility, self_service):
            resources.request(api, "DELETE", f"/apis/{GROUP_VERSION}/accesseligibilities/{name}")


# --- requests ------------------------------------------------------------------------------------------


def test_a_request_for_someone_else_is_refused(env: Env) -> None:
    alice, bob = env.people["alice"], env.people["bob"]
    _denied(
        alice.create(request_manifest(env, bob, "for-bob")),
        REQUESTER_POLICY,
        f"AccessRequest refused: spec.requester.username is {bob.username} but the request is made by "
        f"{alice.username}; one may only request as oneself",
    )


def test_a_request_claiming_a_group_the_caller_is_not_in_is_refused(env: Env) -> None:
    alice = env.people["alice"]
    requester = {"username": alice.username, "groups": ["system:serviceaccounts", "platform-admins"]}
    _denied(
        alice.create(request_manifest(env, alice, "claims-admins", requester=requester)),
        REQUESTER_POLICY,
        f"AccessRequest refused: spec.requester.groups names groups {alice.username} is not in: platform-admins",
    )


def test_a_request_by_someone_not_eligible_is_refused(env: Env) -> None:
    dave = env.people["dave"]
    _denied(
        dave.create(request_manifest(env, dave, "dave-wants-in")),
        ELIGIBILITY_POLICY,
        f"AccessRequest refused: {dave.username} is not among the subjects of AccessEligibility {env.eligibility}",
    )


def test_a_request_outside_the_eligible_namespaces_is_refused(env: Env) -> None:
    alice = env.people["alice"]
    _denied(
        alice.create(request_manifest(env, alice, "elsewhere", namespace=env.other)),
        ELIGIBILITY_POLICY,
        f"AccessRequest refused: namespace {env.other} is not among the namespaces of AccessEligibility "
        f"{env.eligibility} ({env.target})",
    )


def test_a_request_above_the_maximum_duration_is_refused(env: Env) -> None:
    alice = env.people["alice"]
    _denied(
        alice.create(request_manifest(env, alice, "too-long", duration="1h1m")),
        ELIGIBILITY_POLICY,
        f"AccessRequest refused: spec.duration 1h1m exceeds maxDuration 1h of AccessEligibility {env.eligibility}",
    )


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("0s", "duration must be greater than 0s"),
        ("0h0m", "duration must be greater than 0s"),
        ("-5m", 'spec.duration: Invalid value: "-5m": spec.duration in body should match'),
        ("200h", "duration must be at most 168h (7 days)"),
    ],
)
def test_zero_negative_and_huge_durations_are_refused_by_the_schema(env: Env, duration: str, message: str) -> None:
    alice = env.people["alice"]
    result = alice.create(request_manifest(env, alice, f"bad-{uuid.uuid4().hex[:6]}", duration=duration))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_the_request_spec_is_immutable_except_revoking(env: Env) -> None:
    alice = env.people["alice"]
    _admitted(alice.create(request_manifest(env, alice, "fixed")))
    immutable = (
        "AccessRequest fixed refused: its spec is immutable except spec.revoked "
        "(create a new request to ask for something else)"
    )
    for patch in ({"duration": "59m"}, {"reason": "something else"}, {"eligibility": env.self_service},
                  {"startAt": "2030-06-15T12:00:00Z"}):  # fmt: skip
        result = alice.run("patch", "accessrequest", "fixed", "-n", env.target, "--type=merge", "-p",
                           json.dumps({"spec": patch}))  # fmt: skip
        _denied(result, REQUEST_IMMUTABLE_POLICY, immutable)
    labelled = alice.run("label", "accessrequest", "fixed", "-n", env.target, "ticket=INC-42")
    assert labelled.returncode == 0, labelled.stderr  # metadata (kopf's annotations, finalizers) may change
    revoke = alice.run("patch", "accessrequest", "fixed", "-n", env.target, "--type=merge", "-p",
                       '{"spec": {"revoked": true}}')  # fmt: skip
    assert revoke.returncode == 0, revoke.stderr
    _denied(
        alice.run(
            "patch", "accessrequest", "fixed", "-n", env.target, "--type=merge", "-p", '{"spec": {"revoked": false}}'
        ),
        REQUEST_IMMUTABLE_POLICY,
        "AccessRequest fixed refused: spec.revoked cannot be set back to false (create a new request)",
    )


def test_only_the_operator_writes_request_status(env: Env) -> None:
    alice = env.people["alice"]
    _admitted(alice.create(request_manifest(env, alice, "own-status")))
    result = alice.run("patch", "accessrequest", "own-status", "-n", env.target, "--subresource=status",
                       "--type=merge", "-p", '{"status": {"state": "Active"}}')  # fmt: skip
    _denied(
        result,
        REQUEST_STATUS_POLICY,
        f"AccessRequest status is written by the access-hygiene operator only, not by {alice.username}",
    )
    resolve(env, "own-status")  # the operator's own write is admitted


# --- approvals -----------------------------------------------------------------------------------------


def test_approvals_refused_with_their_exact_messages(env: Env) -> None:
    alice, bob, carol, dave = (env.people[n] for n in ("alice", "bob", "carol", "dave"))
    _admitted(alice.create(request_manifest(env, alice, "needs-view")))
    _denied(
        bob.create(approval_manifest(env, bob, "needs-view")),
        APPROVAL_POLICY,
        "AccessApproval refused: AccessRequest needs-view has not been checked by the operator yet "
        "(no status.eligibility); retry in a few seconds",
    )
    resolve(env, "needs-view")
    _denied(
        bob.create(approval_manifest(env, carol, "needs-view")),
        APPROVER_POLICY,
        f"AccessApproval refused: spec.approver.username is {carol.username} but the approval is made by "
        f"{bob.username}; one may only approve as oneself",
    )
    _denied(
        alice.create(approval_manifest(env, alice, "needs-view")),
        APPROVAL_POLICY,
        f"AccessApproval refused: {alice.username} requested AccessRequest needs-view and may not approve it: "
        f"self-approval is not allowed (AccessEligibility {env.eligibility})",
    )
    _denied(
        dave.create(approval_manifest(env, dave, "needs-view")),
        APPROVAL_POLICY,
        f"AccessApproval refused: {dave.username} is not an approver of AccessRequest needs-view "
        f"(AccessEligibility {env.eligibility})",
    )
    _denied(
        carol.create(approval_manifest(env, carol, "needs-view")),
        APPROVAL_POLICY,
        f"AccessApproval refused: {carol.username} may not bind ClusterRole view in namespace {env.target} "
        "(an approver must hold what the request grants, or be allowed to bind it)",
    )
    # A listed approver may deny without holding the role: a denial grants nothing.
    _admitted(carol.create(approval_manifest(env, carol, "needs-view", decision="Deny", comment="not me")))
    approval = _admitted(bob.create(approval_manifest(env, bob, "needs-view", comment="go ahead")))
    name = approval["metadata"]["name"]
    _denied(
        bob.run(
            "patch", "accessapproval", name, "-n", env.target, "--type=merge", "-p", '{"spec": {"decision": "Deny"}}'
        ),
        APPROVER_POLICY,
        f"AccessApproval {name} refused: an AccessApproval is immutable (it records who decided what); "
        "create a new one",
    )
    resolve(env, "needs-view", state="Active")
    _denied(
        bob.create(approval_manifest(env, bob, "needs-view")),
        APPROVAL_POLICY,
        "AccessApproval refused: AccessRequest needs-view is Active, not Pending: it can no longer be decided",
    )


def test_self_approval_where_the_eligibility_allows_it(env: Env) -> None:
    """Self-service for a low-risk role: the requester approves without being listed and without `bind`; anyone
    else still needs both."""
    alice, bob, carol = env.people["alice"], env.people["bob"], env.people["carol"]
    _admitted(alice.create(request_manifest(env, alice, "self-served", eligibility=env.self_service)))
    resolve(env, "self-served", eligibility=env.self_service)
    _denied(
        carol.create(approval_manifest(env, carol, "self-served")),
        APPROVAL_POLICY,
        f"AccessApproval refused: {carol.username} is not an approver of AccessRequest self-served "
        f"(AccessEligibility {env.self_service})",
    )
    approval = _admitted(alice.create(approval_manifest(env, alice, "self-served")))
    assert approval["spec"]["approver"]["username"] == alice.username
    del bob


# --- the CLI, as two users -----------------------------------------------------------------------------


def test_cli_request_approve_list_revoke_as_two_users(env: Env) -> None:
    alice, bob = env.people["alice"], env.people["bob"]
    created = alice.cli("request", env.eligibility, "-n", env.target, "--duration", "20m", "--reason", "deploy")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(f"accessrequest.accesshygiene.io/{env.eligibility}-")
    assert created.stdout.endswith(" created\n")
    name = created.stdout.split("/", 1)[1].split()[0]
    stored = json.loads(alice.run("get", "accessrequest", name, "-n", env.target, "-o", "json").stdout)
    assert stored["spec"]["requester"]["username"] == alice.username  # from SelfSubjectReview, not typed in
    refused = alice.cli("request", env.eligibility, "-n", env.target, "--duration", "2h", "--reason", "more")
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error from server (Forbidden): ")
    assert f"spec.duration 2h exceeds maxDuration 1h of AccessEligibility {env.eligibility}" in refused.stderr
    resolve(env, name)
    approved = bob.cli("approve", name, "-n", env.target, "-o", "json")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["spec"]["approver"]["username"] == bob.username
    self_approved = alice.cli("approve", name, "-n", env.target)
    assert self_approved.returncode == 1
    assert "may not approve it: self-approval is not allowed" in self_approved.stderr
    listed = alice.cli("list", "-n", env.target)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "REQUESTER", "ROLE", "STATE", "EXPIRES", "AGE"]
    row = next(r.split() for r in rows if r.startswith(name + " "))
    assert row[1:4] == [alice.username, "ClusterRole/view", "Pending"]
    as_yaml = yaml.safe_load(alice.cli("list", "-n", env.target, "-o", "yaml").stdout)
    assert name in [item["metadata"]["name"] for item in as_yaml["items"]]
    revoked = alice.cli("revoke", name, "-n", env.target)
    assert revoked.stdout == f"accessrequest.accesshygiene.io/{name} revoked\n", revoked.stderr
    stored = json.loads(alice.run("get", "accessrequest", name, "-n", env.target, "-o", "json").stdout)
    assert stored["spec"]["revoked"] is True


def test_applied_at_start_only_where_the_operator_may(env: Env) -> None:
    """Without permission to write admission policies (the chart's operator with admission off) nothing is
    requested but the permission checks: the chart renders the policies itself."""
    alice = env.people["alice"]
    with kubernetes.config.new_client_from_config(config_file=str(alice.kubeconfig)) as api:
        assert apply_access_admission(api) == 0
    with env.cluster.api_client() as admin:
        policy = resources.get(
            admin, "admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", REQUEST_STATUS_POLICY
        )
    assert policy is not None
    assert f'"{OPERATOR_USER}"' in policy["spec"]["validations"][0]["expression"]  # the applier's user name


def test_end_to_end_with_the_operator_as_two_users_through_the_cli(env: Env) -> None:
    """The real operator resolves the request (status.eligibility), bob approves through the CLI, alice can list
    pods (`kubectl auth can-i` and a real request), then revokes through the CLI and cannot any more."""
    alice, bob = env.people["alice"], env.people["bob"]
    role, elig = f"jit-pod-reader-{env.target}", f"pods-{env.target}"
    rbac = "rbac.authorization.k8s.io/v1"
    with env.cluster.api_client() as admin:
        resources.apply(admin, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
        resources.apply(
            admin,
            {
                "apiVersion": rbac,
                "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
            },
        )
        bind = [
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["clusterroles"],
                "resourceNames": [role],
                "verbs": ["bind"],
            }
        ]
        resources.apply(
            admin,
            {
                "apiVersion": rbac,
                "kind": "Role",
                "metadata": {"name": "bind-pods", "namespace": env.target},
                "rules": bind,
            },
        )
        resources.apply(
            admin,
            {
                "apiVersion": rbac,
                "kind": "RoleBinding",
                "metadata": {"name": "bind-pods", "namespace": env.target},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bind-pods"},
                "subjects": [{"kind": "User", "name": bob.username}],
            },
        )
        resources.request(
            admin,
            "POST",
            f"/apis/{GROUP_VERSION}/accesseligibilities",
            body=_eligibility(
                elig,
                {
                    "subjects": [{"kind": "User", "name": alice.username}],
                    "roleRef": {"kind": "ClusterRole", "name": role},
                    "namespaces": [env.target],
                    "maxDuration": "1h",
                    "approvers": [{"kind": "User", "name": bob.username}],
                },
            ),
        )

        def status(name: str) -> dict[str, Any]:
            found = resources.get(admin, GROUP_VERSION, "AccessRequest", name, env.target) or {}
            return dict(found.get("status") or {})

        def can_list_pods() -> str:
            return alice.run("auth", "can-i", "list", "pods", "-n", env.target).stdout.strip()

        assert can_list_pods() == "no"
        with running_operator(env.cluster.control_plane.operator_kubeconfig, dict(OPERATOR_ENV)):
            created = alice.cli("request", elig, "-n", env.target, "--duration", "10m", "--reason", "e2e")
            assert created.returncode == 0, created.stderr
            name = created.stdout.split("/", 1)[1].split()[0]
            resolved = wait_for(lambda: status(name).get("eligibility"))
            assert resolved == {
                "roleRef": {"kind": "ClusterRole", "name": role},
                "approvers": [{"kind": "User", "name": bob.username}],
                "selfApproval": False,
            }
            approved = bob.cli("approve", name, "-n", env.target)
            assert approved.returncode == 0, approved.stderr
            wait_for(lambda: status(name).get("state") == "Active")
            wait_for(lambda: can_list_pods() == "yes")
            assert alice.run("get", "pods", "-n", env.target).returncode == 0
            row = next(
                line.split()
                for line in alice.cli("list", "-n", env.target).stdout.splitlines()
                if line.startswith(name + " ")
            )
            assert row[1:4] == [alice.username, f"ClusterRole/{role}", "Active"]
            assert row[4] == "in"  # EXPIRES: "in 9m" or "in 10m"
            revoked = alice.cli("revoke", name, "-n", env.target)
            assert revoked.returncode == 0, revoked.stderr
            wait_for(lambda: status(name).get("state") == "Revoked")
            wait_for(lambda: can_list_pods() == "no")
            assert alice.run("get", "pods", "-n", env.target).returncode != 0


def test_approval_with_a_thousand_requests_in_the_namespace(env: Env) -> None:
    """The approval policy evaluates every AccessRequest of the namespace as a param (each skipped by name but the
    one named): with 1,000 more of them, an approval is still judged exactly and within the cost budget."""
    alice, bob, carol = env.people["alice"], env.people["bob"], env.people["carol"]
    _admitted(alice.create(request_manifest(env, alice, "bulk-target")))
    resolve(env, "bulk-target")

    def timed(person: Person) -> tuple[subprocess.CompletedProcess[str], float]:
        manifest = approval_manifest(env, person, "bulk-target")
        started = time.perf_counter()
        result = person.run("create", "--dry-run=server", "-f", "-", manifest=manifest)
        return result, time.perf_counter() - started

    before = min(timed(bob)[1] for _ in range(3))
    path = f"/apis/{GROUP_VERSION}/namespaces/{env.target}/accessrequests"
    with kubernetes.config.new_client_from_config(config_file=str(alice.kubeconfig)) as api:

        def create(index: int) -> None:
            resources.request(api, "POST", path, body=request_manifest(env, alice, f"bulk-{index:04d}"))

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(create, range(1000)))
    time.sleep(2)  # the API server's param informer sees the new requests
    runs = [timed(bob) for _ in range(3)]
    for result, _ in runs:
        assert result.returncode == 0, result.stderr
    refused, _ = timed(carol)
    _denied(
        refused,
        APPROVAL_POLICY,
        f"AccessApproval refused: {carol.username} may not bind ClusterRole view in namespace {env.target} "
        "(an approver must hold what the request grants, or be allowed to bind it)",
    )
    after = min(seconds for _, seconds in runs)
    print(f"\napproval (kubectl, server-side dry-run, best of 3): {before:.3f} s with a few requests in the "
          f"namespace, {after:.3f} s with 1,000 more")  # fmt: skip

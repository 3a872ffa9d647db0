"""Just-in-time access against the real control plane: two token identities (ServiceAccounts alice and bob),
request, approve, use, expiry, refused after; revocation lag measured; operator stopped before an expiry and
started after it; eligibility withdrawn while pending and while active; 1,000 requests at once.

The JIT admission policies are always on (the operator applies them when it starts leading): requests are created
by the requester's own client, approvals by the approver's once the operator has written status.eligibility."""

import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

from access_hygiene.k8s import resources
from access_hygiene.k8s.access_grants import RESYNC_SECONDS
from access_hygiene.k8s.crds import install_crd
from access_hygiene.localcluster.controlplane import ADMIN_USER
from access_hygiene.models.access import CREATED_BY_ANNOTATION as CREATED_BY
from access_hygiene.models.crd import ACCESS_KINDS
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role
from tests.cluster.conftest import OPERATOR_ENV, running_operator, wait_for
from tests.conftest import REPO_ROOT, Cluster

pytestmark = pytest.mark.cluster

GV = "accesshygiene.io/v1alpha1"
ROLE = "jit-pod-reader"
SA_PREFIX = "system:serviceaccount"
SYNCED = "Just-in-time access: caches synced"
NOT_CHECKED_YET = "has not been checked by the operator yet"


def report(line: str) -> None:
    """Figures the tests measure, collected in one file for the closing note (pytest -s shows them too)."""
    print(line)
    with (REPO_ROOT / ".pytest_cache" / "jit-figures.txt").open("a") as out:
        out.write(line + "\n")


@pytest.fixture(scope="module")
def jit_cluster(crd_installed: Cluster) -> Cluster:
    with crd_installed.api_client() as api:
        install_jit_kinds(api)
    (REPO_ROOT / ".pytest_cache").mkdir(exist_ok=True)
    return crd_installed


def install_jit_kinds(api: kubernetes.client.ApiClient) -> None:
    """The JIT CRDs, the grant ceiling, the role granted and the participants' ClusterRole."""
    for definition in ACCESS_KINDS:
        install_crd(api, yaml.safe_load((REPO_ROOT / "crds" / definition.file_name).read_text()))
    resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
    resources.apply(
        api,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": ROLE},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
    )
    resources.apply(
        api,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "jit-participant"},
            "rules": [
                {
                    "apiGroups": ["accesshygiene.io"],
                    "resources": ["accessrequests", "accessapprovals"],
                    "verbs": ["get", "list", "watch", "create", "patch"],
                },
                {"apiGroups": ["accesshygiene.io"], "resources": ["accesseligibilities"], "verbs": ["get", "list"]},
                # Admission: an approver must be allowed to bind the role it approves (render/access_admission.py).
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["clusterroles"],
                    "resourceNames": [ROLE, "jit-minter"],
                    "verbs": ["bind"],
                },
            ],
        },
    )


@pytest.fixture
def operator_for_jit(jit_cluster: Cluster) -> Iterator[KopfRunner]:
    with running_operator(jit_cluster.control_plane.operator_kubeconfig, dict(OPERATOR_ENV)) as runner:
        yield runner


class Identity:
    """A ServiceAccount with a token: a second person, as the API server authenticates them."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self.username = f"{SA_PREFIX}:{namespace}:{name}"
        with cluster.api_client() as admin:
            core = kubernetes.client.CoreV1Api(admin)
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
            request = {
                "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": 3600}
            }
            token = core.create_namespaced_service_account_token(name, namespace, request).status.token
            resources.apply(
                admin,
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": f"jit-participant-{name}", "namespace": namespace},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "jit-participant",
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                },
            )
        self.api = cluster.client_for_token(str(token), name)

    def can_list_pods(self) -> bool:
        """`kubectl auth can-i list pods` as this identity."""
        attributes = {"namespace": self.namespace, "verb": "list", "resource": "pods"}
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": attributes}}  # fmt: skip
        result = resources.request(
            self.api, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review
        )
        return bool(result["status"]["allowed"])

    def list_pods(self) -> bool:
        """A real request: True when it succeeds, False when RBAC refuses it (403)."""
        try:
            resources.request(self.api, "GET", f"/api/v1/namespaces/{self.namespace}/pods")
        except kubernetes.client.ApiException as error:
            if error.status == 403:
                return False
            raise
        return True

    def create(self, manifest: dict[str, Any], *, checked: bool = False) -> dict[str, Any]:
        """Create as this identity. An approval first waits for the operator's status.eligibility on its request
        (admission judges the approval against it) unless the caller already saw it (`checked`)."""
        if manifest["kind"] == "AccessApproval":
            namespace, request = manifest["metadata"]["namespace"], manifest["spec"]["request"]
            if not checked:
                wait_for(lambda: status_of(self.api, namespace, request).get("eligibility"), timeout=60,
                         interval=0.05)  # fmt: skip
            # The policy reads the request from the API server's own param informer, which can trail the status
            # just read: retry the refusal that says so (its message asks for that), and only that one.
            deadline = time.time() + 10
            while True:
                try:
                    return resources.create(self.api, manifest)
                except kubernetes.client.ApiException as error:
                    if error.status != 403 or NOT_CHECKED_YET not in str(error.body) or time.time() > deadline:
                        raise
                time.sleep(0.1)
        return resources.create(self.api, manifest)


def eligibility(name: str, namespace: str, requester: Identity, approver: Identity, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": GV,
        "kind": "AccessEligibility",
        "metadata": {"name": name},
        "spec": {
            "subjects": [{"kind": "ServiceAccount", "name": requester.name, "namespace": requester.namespace}],
            "roleRef": {"kind": "ClusterRole", "name": ROLE},
            "namespaces": [namespace],
            "maxDuration": "1h",
            "approvers": [{"kind": "ServiceAccount", "name": approver.name, "namespace": approver.namespace}],
            **extra,
        },
    }


def access_request(name: str, namespace: str, eligibility_name: str, username: str, duration: str) -> dict[str, Any]:
    return {
        "apiVersion": GV,
        "kind": "AccessRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"eligibility": eligibility_name, "requester": {"username": username}, "duration": duration,
                 "reason": "incident 42"},
    }  # fmt: skip


def approval(name: str, namespace: str, request_name: str, username: str, decision: str = "Approve") -> dict[str, Any]:
    return {
        "apiVersion": GV,
        "kind": "AccessApproval",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"request": request_name, "approver": {"username": username}, "decision": decision},
    }


def status_of(api: Any, namespace: str, name: str) -> dict[str, Any]:
    obj = resources.get(api, GV, "AccessRequest", name, namespace) or {}
    return dict(obj.get("status") or {})


def state_is(api: Any, namespace: str, name: str, state: str) -> dict[str, Any] | None:
    status = status_of(api, namespace, name)
    return status if status.get("state") == state else None


def binding_exists(api: Any, namespace: str, name: str) -> bool:
    return resources.get(api, "rbac.authorization.k8s.io/v1", "RoleBinding", f"ah-jit-{name}", namespace) is not None


def parse(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def wait_gone_after(api: Any, namespace: str, name: str, expires_at: float, timeout: float = 30.0) -> float:
    """Poll (every 20 ms) until the grant binding is gone; the lag after expires_at in seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not binding_exists(api, namespace, name):
            return time.time() - expires_at
        time.sleep(0.02)
    raise AssertionError(f"RoleBinding ah-jit-{name} still present {timeout}s after expiry")


def events_for(api: Any, namespace: str, name: str) -> list[str]:
    events = resources.request(api, "GET", f"/api/v1/namespaces/{namespace}/events").get("items") or []
    return [e["reason"] for e in events if e["involvedObject"].get("name") == name]


@pytest.fixture
def people(jit_cluster: Cluster, namespace: str) -> tuple[Identity, Identity]:
    return Identity(jit_cluster, namespace, "alice"), Identity(jit_cluster, namespace, "bob")


def test_request_approve_use_expire_refused(
    jit_cluster: Cluster, operator_for_jit: KopfRunner, namespace: str, people: tuple[Identity, Identity]
) -> None:
    alice, bob = people
    elig = f"e-{uuid.uuid4().hex[:6]}"
    with jit_cluster.api_client() as admin:
        resources.apply(admin, eligibility(elig, namespace, alice, bob))
        wait_for(lambda: resources.get(admin, GV, "AccessEligibility", elig).get("status", {}).get("conditions"))  # type: ignore[union-attr]
        ready = resources.get(admin, GV, "AccessEligibility", elig)["status"]["conditions"][0]  # type: ignore[index]
        assert (ready["status"], ready["message"]) == ("True", f"grants ClusterRole/{ROLE} in {namespace} for up to 1h")
        assert not alice.can_list_pods()
        assert not alice.list_pods()

        alice.create(access_request("fix", namespace, elig, alice.username, "8s"))
        pending = wait_for(lambda: state_is(admin, namespace, "fix", "Pending"))
        assert pending["role"] == f"ClusterRole/{ROLE}"
        assert not alice.list_pods()

        approved_at = time.time()
        bob.create(approval("ok", namespace, "fix", bob.username))
        wait_for(alice.list_pods, timeout=10, interval=0.02)
        usable_after = time.time() - approved_at
        assert alice.can_list_pods()
        # The binding is applied before the status says Active: wait for the status rather than read it at once.
        active = wait_for(lambda: state_is(admin, namespace, "fix", "Active"), timeout=10, interval=0.02)
        assert (active["state"], active["approvedBy"], active["bindings"]) == ("Active", bob.username, ["ah-jit-fix"])
        binding = resources.get(admin, "rbac.authorization.k8s.io/v1", "RoleBinding", "ah-jit-fix", namespace)
        assert binding is not None
        assert binding["metadata"]["ownerReferences"][0]["kind"] == "AccessRequest"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "alice", "namespace": namespace}]

        expires = parse(active["expiresAt"])
        lag = wait_gone_after(admin, namespace, "fix", expires)
        wait_for(lambda: not alice.list_pods(), timeout=5, interval=0.02)
        refused_after = time.time() - expires
        assert not alice.can_list_pods()
        expired = wait_for(lambda: state_is(admin, namespace, "fix", "Expired"))
        assert expired["endedAt"] == active["expiresAt"]
        assert expired["bindings"] == []

        # One Event per transition, each once. (They went missing or late in full runs: the operator started here
        # re-decided test_access_admission's 1,000 requests in its namespace being deleted and queued an Event for
        # each, refused by the API server at 20/s from a 1,000-deep backlog that drops its oldest; none is
        # announced into a terminating namespace now.)
        transitions = ["AccessExpired", "AccessGranted", "AccessRequested"]

        def events_once_expired() -> list[str]:
            found = sorted(events_for(admin, namespace, "fix"))
            return found if set(transitions) <= set(found) else []

        reasons = wait_for(events_once_expired, timeout=30)
        report(f"flow: request->usable after approval {usable_after:.3f} s; binding deleted {lag:.3f} s after expiry; "
               f"real request refused {refused_after:.3f} s after expiry; Events {reasons}")  # fmt: skip
        # The < 1 s revocation goal is benchmarks/jit_benchmark.py's; here only a revocation that hangs fails.
        assert lag < 5.0, f"revocation lag {lag:.3f} s"
        assert reasons == transitions


class OperatorProcess:
    """`access-hygiene run` as its own process (SIGKILL-able), logging to a file."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        env = {**os.environ, **OPERATOR_ENV, "KUBECONFIG": str(kubeconfig)}
        # No liveness endpoint: a port found free here could be taken by another process before the operator binds
        # it (the test reads the log, not the probe).
        command = [sys.executable, "-m", "access_hygiene.cli.main", "run", "--liveness", ""]
        self.log = log
        self.started = time.time()
        with log.open("w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)

    def wait_for_line(self, text: str, timeout: float = 60.0) -> float:
        """When `text` first appeared in the log (polled every 20 ms)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log.read_text():
                return time.time()
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def test_operator_killed_before_expiry_revokes_the_overdue_grant_once_synced_not_on_a_resync(
    jit_cluster: Cluster, namespace: str, people: tuple[Identity, Identity], tmp_path: Path
) -> None:
    """The start-up pass revokes what fell due while the operator was away (well under a second after its caches
    synced on a quiet machine, reported below); the bound only tells it from the next resync, RESYNC_SECONDS on."""
    alice, bob = people
    elig = f"e-{uuid.uuid4().hex[:6]}"
    kubeconfig: Path = jit_cluster.control_plane.operator_kubeconfig
    with jit_cluster.api_client() as admin:
        resources.apply(admin, eligibility(elig, namespace, alice, bob))
        first = OperatorProcess(kubeconfig, tmp_path / "first.log")
        try:
            first.wait_for_line(SYNCED)
            alice.create(access_request("outage", namespace, elig, alice.username, "6s"))
            bob.create(approval("ok", namespace, "outage", bob.username))
            active = wait_for(lambda: state_is(admin, namespace, "outage", "Active"))
        finally:
            first.kill()  # SIGKILL: no shutdown handler runs
        expires = parse(active["expiresAt"])
        time.sleep(max(0.0, expires - time.time()) + 2.0)
        assert binding_exists(admin, namespace, "outage"), "nothing revokes while the operator is away"
        assert alice.list_pods()  # the overdue grant still works: why the overdue metric and its alert exist
        second = OperatorProcess(kubeconfig, tmp_path / "second.log")
        try:
            synced = second.wait_for_line(SYNCED)
            gone = synced + wait_gone_after(admin, namespace, "outage", synced, timeout=RESYNC_SECONDS / 2)
            wait_for(lambda: state_is(admin, namespace, "outage", "Expired"))
            assert not alice.list_pods()
        finally:
            second.stop()
        report(f"restart (SIGKILL before expiry, started {time.time() - expires:.0f} s after it): overdue grant "
               f"revoked {gone - second.started:.3f} s after the process started, {gone - synced:.3f} s after its "
               f"caches synced")  # fmt: skip


def test_eligibility_withdrawn_while_pending_denies_and_while_active_revokes(
    jit_cluster: Cluster, operator_for_jit: KopfRunner, namespace: str, people: tuple[Identity, Identity]
) -> None:
    alice, bob = people
    pending_elig, active_elig = f"p-{uuid.uuid4().hex[:6]}", f"a-{uuid.uuid4().hex[:6]}"
    with jit_cluster.api_client() as admin:
        resources.apply(admin, eligibility(pending_elig, namespace, alice, bob))
        resources.apply(admin, eligibility(active_elig, namespace, alice, bob))
        alice.create(access_request("waiting", namespace, pending_elig, alice.username, "10m"))
        alice.create(access_request("working", namespace, active_elig, alice.username, "10m"))
        bob.create(approval("ok", namespace, "working", bob.username))
        wait_for(lambda: state_is(admin, namespace, "waiting", "Pending"))
        wait_for(lambda: state_is(admin, namespace, "working", "Active"))
        assert alice.list_pods()

        resources.delete(admin, GV, "AccessEligibility", pending_elig)
        denied = wait_for(lambda: state_is(admin, namespace, "waiting", "Denied"))
        assert denied["conditions"][1]["message"] == f"AccessEligibility {pending_elig} was deleted"

        narrowed = eligibility(active_elig, namespace, alice, bob)
        narrowed["spec"]["namespaces"] = ["somewhere-else"]
        resources.apply(admin, narrowed)
        revoked = wait_for(lambda: state_is(admin, namespace, "working", "Revoked"))
        assert revoked["conditions"][1]["reason"] == "NamespaceNotEligible"
        wait_for(lambda: not binding_exists(admin, namespace, "working"), timeout=5)
        wait_for(lambda: not alice.list_pods(), timeout=5)

        resources.apply(admin, eligibility(active_elig, namespace, alice, bob))  # restored: stays revoked
        time.sleep(1.0)
        assert status_of(admin, namespace, "working")["state"] == "Revoked"
        assert not binding_exists(admin, namespace, "working")


def test_a_request_naming_a_missing_eligibility_is_admitted_then_denied_by_name(
    jit_cluster: Cluster, operator_for_jit: KopfRunner, namespace: str, people: tuple[Identity, Identity]
) -> None:
    """Admission cannot refuse it (a binding's param is fixed and each param is judged alone: no validation sees
    that none is named, docs/just-in-time-access.md); the operator denies it once ELIGIBILITY_GRACE has passed."""
    from access_hygiene.engine.access.state import ELIGIBILITY_GRACE

    alice, _ = people
    missing = f"missing-{uuid.uuid4().hex[:6]}"
    with jit_cluster.api_client() as admin:
        created = alice.create(access_request("typo", namespace, missing, alice.username, "10m"))
        pending = wait_for(lambda: state_is(admin, namespace, "typo", "Pending"), timeout=10)
        assert pending["conditions"][0]["reason"] == "EligibilityNotFound"
        denied = wait_for(lambda: state_is(admin, namespace, "typo", "Denied"),
                          timeout=ELIGIBILITY_GRACE.total_seconds() + 20)  # fmt: skip
        message = (
            f"AccessEligibility {missing} does not exist (still missing 10s after the request was created): nothing "
            "grants this request; create a new one naming an existing AccessEligibility"
        )
        assert [(c["type"], c["status"], c["reason"], c["message"]) for c in denied["conditions"]] == [
            ("Approved", "False", "EligibilityNotFound", message),
            ("Active", "False", "EligibilityNotFound", message),
        ]
        assert parse(denied["endedAt"]) >= parse(created["metadata"]["creationTimestamp"]) + 10
        assert not binding_exists(admin, namespace, "typo")
        wait_for(lambda: "AccessDenied" in events_for(admin, namespace, "typo"), timeout=30)


def test_manual_revoke_and_a_foreign_binding_is_never_adopted(
    jit_cluster: Cluster, operator_for_jit: KopfRunner, namespace: str, people: tuple[Identity, Identity]
) -> None:
    alice, bob = people
    elig = f"e-{uuid.uuid4().hex[:6]}"
    with jit_cluster.api_client() as admin:
        resources.apply(admin, eligibility(elig, namespace, alice, bob))
        foreign = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "ah-jit-taken", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "someone"}],
        }
        resources.create(admin, foreign)
        alice.create(access_request("taken", namespace, elig, alice.username, "10m"))
        bob.create(approval("ok", namespace, "taken", bob.username))
        conflict = wait_for(
            lambda: (
                (status_of(admin, namespace, "taken").get("conditions") or [{}, {}])[1].get("reason")
                == "BindingConflict"
            )
        )
        assert conflict
        live = resources.get(admin, "rbac.authorization.k8s.io/v1", "RoleBinding", "ah-jit-taken", namespace)
        assert live is not None
        assert live["subjects"] == foreign["subjects"]
        assert "ownerReferences" not in live["metadata"]

        alice.create(access_request("fix", namespace, elig, alice.username, "10m"))
        bob.create(approval("ok2", namespace, "fix", bob.username))
        wait_for(lambda: state_is(admin, namespace, "fix", "Active"))
        resources.patch_merge(alice.api, GV, "AccessRequest", "fix", {"spec": {"revoked": True}}, namespace)
        revoked = wait_for(lambda: state_is(admin, namespace, "fix", "Revoked"))
        assert revoked["conditions"][1]["reason"] == "RevokedManually"
        wait_for(lambda: not alice.list_pods(), timeout=5)
        assert resources.get(admin, "rbac.authorization.k8s.io/v1", "RoleBinding", "ah-jit-taken", namespace)


def test_a_thousand_requests_at_once(
    jit_cluster: Cluster, operator_for_jit: KopfRunner, namespace: str, people: tuple[Identity, Identity]
) -> None:
    """1,000 requests in a burst, each approved once the operator has checked it: every one becomes Active (all at
    the same time: the window outlasts the approval burst) and every one expires, its binding deleted.

    Spread over ten namespaces of 100: the approval policy judges every request of the approval's namespace as a
    param (about 1 ms each on this machine, docs/just-in-time-access.md), so 1,000 in one namespace make each
    approval cost ~1 s of API server CPU and the burst minutes; the operator's work (1,000 requests, grants,
    expiries at once) is the same either way."""
    alice, bob = people
    elig = f"e-{uuid.uuid4().hex[:6]}"
    count, spread = 1000, 10
    window = "180s"  # longer than checking and approving 1,000 takes here (63 s at load 6), so all are Active together
    others = [f"{namespace}-{n}" for n in range(1, spread)]
    namespaces = [namespace, *others]
    where = {n: namespaces[n % spread] for n in range(count)}

    def statuses() -> list[dict[str, Any]]:
        found = []
        for name in namespaces:
            items = resources.request(admin, "GET", f"/apis/{GV}/namespaces/{name}/accessrequests")["items"]
            found += [dict(item.get("status") or {}) for item in items]
        return found

    def counted(predicate: Any) -> int:
        return sum(1 for status in statuses() if predicate(status))

    bindings = "/apis/rbac.authorization.k8s.io/v1/namespaces/{}/rolebindings"
    selector = {"labelSelector": "accesshygiene.io/access-request"}

    def remaining() -> int:
        return sum(len(resources.request(admin, "GET", bindings.format(name), query=selector)["items"])
                   for name in namespaces)  # fmt: skip

    with jit_cluster.api_client() as admin:
        core = kubernetes.client.CoreV1Api(admin)
        try:
            for other in others:
                core.create_namespace({"metadata": {"name": other}})
                for person in people:  # may create requests and approvals there, as in its own namespace
                    resources.apply(admin, {
                        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": {"name": f"jit-participant-{person.name}", "namespace": other},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                    "name": "jit-participant"},
                        "subjects": [{"kind": "ServiceAccount", "name": person.name, "namespace": namespace}],
                    })  # fmt: skip
            wide = eligibility(elig, namespace, alice, bob)
            wide["spec"]["namespaces"] = namespaces
            resources.apply(admin, wide)
            started = time.time()
            with ThreadPoolExecutor(8) as pool:  # at once: eight writers, as a burst of people would be
                list(pool.map(lambda n: alice.create(access_request(f"r{n}", where[n], elig, alice.username, window)),
                              range(count)))  # fmt: skip
                requests_created = time.time() - started
                wait_for(lambda: counted(lambda status: status.get("eligibility")) == count, timeout=180, interval=1)
                all_checked = time.time() - started
                list(pool.map(lambda n: bob.create(approval(f"a{n}", where[n], f"r{n}", bob.username), checked=True),
                              range(count)))  # fmt: skip
            created = time.time() - started

            wait_for(lambda: counted(lambda status: status.get("state") == "Active") == count, timeout=120, interval=1)
            all_active = time.time() - started
            rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            latest_expiry = max(parse(status["expiresAt"]) for status in statuses())
            assert remaining() == count
            time.sleep(max(0.0, latest_expiry - time.time()))
            wait_for(lambda: remaining() == 0, timeout=60, interval=0.05)
            all_gone_after = time.time() - latest_expiry
            wait_for(lambda: counted(lambda status: status.get("state") == "Expired") == count, timeout=120,
                     interval=1)  # fmt: skip
            assert not alice.list_pods()
        finally:
            for other in others:
                core.delete_namespace(other)
    report(f"1,000 requests over {spread} namespaces: created in {requests_created:.1f} s, all checked by the "
           f"operator {all_checked:.1f} s after the first create, approvals created by {created:.1f} s, all Active "
           f"{all_active:.1f} s after the first create; every binding gone {all_gone_after:.3f} s after the last "
           f"expiry; test process max RSS {rss_mib:.0f} MiB (operator in-process, with the client)")  # fmt: skip


MINTER_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]},
]


def stamped(api: Any, namespace: str) -> bool:
    """The creator stamp (a MutatingAdmissionPolicy the operator applies at start) is live: a server-side dry-run
    create of a Secret comes back annotated with the caller's name."""
    probe = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "stamp-probe", "namespace": namespace}}
    made = resources.request(api, "POST", f"/api/v1/namespaces/{namespace}/secrets", query={"dryRun": "All"},
                             body=probe)  # fmt: skip
    return (made["metadata"].get("annotations") or {}).get(CREATED_BY) == ADMIN_USER


@pytest.mark.parametrize("mode", ["audit", "enforce"])
def test_what_the_grantee_created_inside_the_window_is_reported_after_it_and_removed_in_enforce_mode(
    jit_cluster: Cluster, namespace: str, people: tuple[Identity, Identity], mode: str
) -> None:
    """A token Secret and a RoleBinding alice made with the grant outlive it: AH-GOV-005 in status.leftovers (with
    uid and creator, stamped by admission) and a Warning Event; in enforce mode (the namespace's label) both are
    then removed, with a Normal Event. A Secret and a RoleBinding another user (the admin) made in the same
    namespace inside the window are reported too (the role could have made them) and never removed; an object
    made before the window is not listed."""
    from access_hygiene.render.grant_ceiling import DEFAULT_GRANT_CEILING_RULES

    alice, bob = people
    elig = f"e-{uuid.uuid4().hex[:6]}"
    env = {**OPERATOR_ENV, "ACCESS_HYGIENE_ALLOWED_SENSITIVE_CAPABILITIES": '["rbac-write"]',
           "ACCESS_HYGIENE_READ_SECRET_METADATA": "true"}  # fmt: skip
    token_secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                    "metadata": {"annotations": {"kubernetes.io/service-account.name": "alice"}}}  # fmt: skip
    bob_subject = {"kind": "ServiceAccount", "name": "bob", "namespace": namespace}

    def secret(name: str) -> dict[str, Any]:
        return {**token_secret, "metadata": {**token_secret["metadata"], "name": name, "namespace": namespace}}

    def binding(name: str) -> dict[str, Any]:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "jit-minter"},
                "subjects": [bob_subject]}  # fmt: skip

    with jit_cluster.api_client() as admin:
        if mode == "enforce":
            resources.patch_merge(admin, "v1", "Namespace", namespace,
                                  {"metadata": {"labels": {"accesshygiene.io/mode": "enforce"}}})  # fmt: skip
        wider = [*DEFAULT_GRANT_CEILING_RULES, *MINTER_RULES[1:]]
        resources.apply(admin, render_grant_ceiling_role("access-hygiene-grant-ceiling", wider))
        resources.apply(admin, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                "metadata": {"name": "jit-minter"}, "rules": MINTER_RULES})  # fmt: skip
        resources.create(admin, secret("before"))
        minter = eligibility(elig, namespace, alice, bob)
        minter["spec"]["roleRef"]["name"] = "jit-minter"
        resources.apply(admin, minter)
        try:
            with running_operator(jit_cluster.control_plane.operator_kubeconfig, env):
                wait_for(lambda: stamped(admin, namespace), timeout=30)
                time.sleep(1.1)  # "before" is created in an earlier second than the window starts
                alice.create(access_request("mint", namespace, elig, alice.username, "10s"))
                bob.create(approval("ok", namespace, "mint", bob.username))
                active = wait_for(lambda: state_is(admin, namespace, "mint", "Active"))
                wait_for(alice.list_pods, timeout=10, interval=0.05)
                made = [alice.create(secret("kept-token")), alice.create(binding("kept-binding"))]
                others = [resources.create(admin, secret("admins-token")), resources.create(admin, binding("admins"))]
                expired = wait_for(lambda: (state_is(admin, namespace, "mint", "Expired") or {}).get("leftovers"),
                                   timeout=30)  # fmt: skip
                wait_for(lambda: "AccessLeftover" in events_for(admin, namespace, "mint"))
                if mode == "enforce":
                    removed = wait_for(lambda: [item for item in status_of(admin, namespace, "mint")["leftovers"]
                                                if item.get("removedAt")], timeout=30)  # fmt: skip
                    wait_for(lambda: "AccessLeftoverRemoved" in events_for(admin, namespace, "mint"))
                else:
                    time.sleep(3.0)  # what enforce mode would have removed by now stays
                final = status_of(admin, namespace, "mint")["leftovers"]
        finally:
            resources.apply(admin, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
        assert active["role"] == "ClusterRole/jit-minter"
        assert sorted((item["kind"], item["name"], item["createdBy"]) for item in expired) == [
            ("RoleBinding", "admins", ADMIN_USER),
            ("RoleBinding", "kept-binding", alice.username),
            ("Secret", "admins-token", ADMIN_USER),
            ("Secret", "kept-token", alice.username),
        ]
        uids = {obj["metadata"]["name"]: obj["metadata"]["uid"] for obj in [*made, *others]}
        assert all(item["uid"] == uids[item["name"]] for item in expired)
        assert next(item for item in expired if item["name"] == "kept-binding")["detail"] == (
            f"binds ClusterRole/jit-minter to ServiceAccount {namespace}/bob"
        )
        for obj in others:  # another user's, in the same namespace and window: never removed
            assert resources.get(admin, obj["apiVersion"], obj["kind"], obj["metadata"]["name"], namespace)
        assert resources.get(admin, "v1", "Secret", "before", namespace)
        alices = [(obj["apiVersion"], obj["kind"], obj["metadata"]["name"]) for obj in made]
        if mode == "enforce":
            assert sorted(item["name"] for item in removed) == ["kept-binding", "kept-token"]
            assert sorted(item["name"] for item in final if item.get("removedAt")) == ["kept-binding", "kept-token"]
            for api_version, kind, name in alices:
                wait_for(lambda: resources.get(admin, api_version, kind, name, namespace) is None, timeout=10)  # noqa: B023
        else:
            assert not [item for item in final if item.get("removedAt")]
            for api_version, kind, name in alices:
                assert resources.get(admin, api_version, kind, name, namespace)

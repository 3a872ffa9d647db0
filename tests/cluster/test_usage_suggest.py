"""suggest and unused on the real control plane's audit log (Metadata level, see localcluster/controlplane.py).

A workload authenticates as its ServiceAccount (token from TokenRequest) and makes a realistic set of calls while
bound to the too-wide `edit` role; `suggest` turns the audit log into an AccessPolicy; the operator enforces it and
the wide binding goes; replaying the same calls then succeeds, the forbidden call stays forbidden, and every
generated rule is exercised (a second `suggest` over the replay alone yields the same rules). `unused` on an SA
bound to `edit` that only read ConfigMaps lists the rest of `edit`; a bound SA with no requests gets no finding.
"""

import gzip
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

from access_hygiene.cli.main import main
from tests.audit_log import audit_log_events
from tests.cluster.conftest import cluster_role_grants, wait_for, wait_for_authorizer
from tests.cluster.test_policy_operator import GROUP, PLURAL, VERSION, can, wait_condition
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

APP = "orders-api"
Call = tuple[str, Callable[[], object]]


def sa_token(api: kubernetes.client.ApiClient, namespace: str, name: str) -> str:
    request = {"spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": 3600}}
    result = kubernetes.client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
    return str(result.status.token)


def bind_edit(api: kubernetes.client.ApiClient, namespace: str, sa: str) -> str:
    name = f"{sa}-too-wide"
    kubernetes.client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
        },
    )
    # The authorizer learns of the binding through its informer: a request right after the create can still be
    # refused on a loaded machine. Wait until a SubjectAccessReview (same authorizer) allows what `edit` grants.
    wait_for(lambda: can(api, namespace, sa, "get", "configmaps"))
    return name


def app_calls(app: kubernetes.client.ApiClient, namespace: str) -> list[Call]:
    """What the app does: read its config, list and watch pods, record an event, renew its lease."""
    core = kubernetes.client.CoreV1Api(app)
    leases = kubernetes.client.CoordinationV1Api(app)

    def watch_pods() -> object:
        return list(kubernetes.watch.Watch().stream(core.list_namespaced_pod, namespace, timeout_seconds=1))

    event = {
        "metadata": {"generateName": f"{APP}."},
        "involvedObject": {"kind": "ConfigMap", "name": "orders-config", "namespace": namespace},
        "reason": "ConfigLoaded",
        "message": "configuration loaded",
        "type": "Normal",
    }
    return [
        ("get configmap orders-config", lambda: core.read_namespaced_config_map("orders-config", namespace)),
        ("list pods", lambda: core.list_namespaced_pod(namespace)),
        ("watch pods", watch_pods),
        ("create event", lambda: core.create_namespaced_event(namespace, event)),
        ("patch own lease", lambda: leases.patch_namespaced_lease(APP, namespace, {"spec": {"holderIdentity": APP}})),
    ]


def forbidden_call(app: kubernetes.client.ApiClient) -> int:
    """The app also tries to list nodes (not in `edit`); returns the HTTP status."""
    try:
        kubernetes.client.CoreV1Api(app).list_node()
    except kubernetes.client.ApiException as error:
        return int(error.status)
    return 200


def audit_has(cluster: Cluster, username: str, verb: str, resource: str, since: str) -> bool:
    for event in audit_log_events(cluster.control_plane.audit_log_path):
        ref = event.get("objectRef") or {}
        if (event["user"]["username"], event["verb"], ref.get("resource")) == (username, verb, resource) and event[
            "requestReceivedTimestamp"
        ] >= since:
            return True
    return False


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rule_requests(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    return {
        (verb, group, resource, name)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [""]
    }


def test_suggested_policy_runs_the_app_and_nothing_more(
    operator: KopfRunner, cluster: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    username = f"system:serviceaccount:{namespace}:{APP}"
    log = str(cluster.control_plane.audit_log_path)
    with cluster.api_client() as admin:
        core = kubernetes.client.CoreV1Api(admin)
        core.create_namespaced_service_account(namespace, {"metadata": {"name": APP}})
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "orders-config"}, "data": {"a": "1"}})
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "other-config"}})
        leases = kubernetes.client.CoordinationV1Api(admin)
        for lease in (APP, "someone-else"):
            leases.create_namespaced_lease(namespace, {"metadata": {"name": lease}, "spec": {"holderIdentity": "x"}})
        too_wide = bind_edit(admin, namespace, APP)

        # 1. The app runs on the too-wide role; the audit log records what it does.
        with cluster.client_for_token(sa_token(admin, namespace, APP)) as app:
            for _label, call in app_calls(app, namespace):
                call()  # all allowed by edit
            assert forbidden_call(app) == 403
        start = "2000-01-01T00:00:00Z"
        wait_for(lambda: audit_has(cluster, username, "list", "nodes", start))

        # 2. suggest
        code, out, err = run_cli(capsys, "suggest", log, "--serviceaccount", f"{namespace}:{APP}", "--mode", "enforce")
        assert code == 0, err
        policy = yaml.safe_load(out)
        rules = policy["spec"]["rbac"]["rules"]
        assert rules == [
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["orders-config"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [APP], "verbs": ["patch"]},
        ]
        assert "clusterRules" not in policy["spec"]["rbac"]
        comments = "\n".join(line for line in out.splitlines() if line.startswith("#"))
        assert "Denied (the app tried these and was refused; not granted):\n#   list nodes cluster-wide (1x" in comments

        # 3. Apply it as the how-to says: let the operator adopt the SA, apply, drop the wide binding.
        core.patch_namespaced_service_account(
            APP, namespace, {"metadata": {"annotations": {"accesshygiene.io/adopt": "true"}}}
        )
        kubernetes.client.CustomObjectsApi(admin).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, policy
        )
        wait_condition(admin, namespace, APP, "True", "Reconciled")
        kubernetes.client.RbacAuthorizationV1Api(admin).delete_namespaced_role_binding(too_wide, namespace)
        # The authorizer would otherwise still answer from the deleted `edit` binding (and may not have the
        # operator's new Role and RoleBinding yet).
        wait_for_authorizer(admin)

        # 4. Every rule allows exactly what it lists (SubjectAccessReview) and nothing next to it.
        for verb, group, resource, name in rule_requests(rules):
            assert can(admin, namespace, APP, verb, resource, name, group), (verb, resource, name)
        for verb, group, resource, name in [
            ("get", "", "configmaps", "other-config"),
            ("list", "", "configmaps", ""),
            ("get", "", "pods", "x"),
            ("delete", "", "pods", "x"),
            ("create", "", "pods", ""),
            ("patch", "coordination.k8s.io", "leases", "someone-else"),
            ("delete", "coordination.k8s.io", "leases", APP),
            ("list", "", "secrets", ""),
            ("update", "", "configmaps", "orders-config"),
        ]:
            assert not can(admin, namespace, APP, verb, resource, name, group), (verb, resource, name)

        # 5. Replay: the same calls succeed on the suggested policy alone, the forbidden one stays forbidden.
        replay_start = now_rfc3339()
        with cluster.client_for_token(sa_token(admin, namespace, APP)) as app:
            failures = []
            for label, call in app_calls(app, namespace):
                try:
                    call()
                except kubernetes.client.ApiException as error:
                    failures.append(f"{label}: {error.status}")
            assert failures == []
            assert forbidden_call(app) == 403
            # Next to what was used, the real API refuses too.
            with pytest.raises(kubernetes.client.ApiException) as refused:
                kubernetes.client.CoreV1Api(app).read_namespaced_config_map("other-config", namespace)
            assert refused.value.status == 403
        wait_for(lambda: audit_has(cluster, username, "list", "nodes", replay_start))

        # 6. Every generated rule was exercised by the replay: suggesting from the replay alone gives the same.
        code, out, err = run_cli(capsys, "suggest", log, "--sa", f"{namespace}:{APP}", "--since", replay_start,
                                 "-o", "json")  # fmt: skip
        assert code == 0, err
        [entry] = json.loads(out)["suggestions"]
        assert entry["manifests"][0]["spec"]["rbac"]["rules"] == rules
        assert [d.split(" (")[0] for d in entry["denied"]] == [
            "get configmaps other-config in namespace " + namespace,
            "list nodes cluster-wide",
        ]


def test_unused_lists_the_rest_of_edit(cluster: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    log = str(cluster.control_plane.audit_log_path)
    start = now_rfc3339()
    with cluster.api_client() as admin:
        core = kubernetes.client.CoreV1Api(admin)
        for sa in ("reader", "idle"):
            core.create_namespaced_service_account(namespace, {"metadata": {"name": sa}})
            bind_edit(admin, namespace, sa)
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}})
        with cluster.client_for_token(sa_token(admin, namespace, "reader")) as app:
            reader = kubernetes.client.CoreV1Api(app)
            reader.read_namespaced_config_map("settings", namespace)
            reader.list_namespaced_config_map(namespace)
        wait_for(lambda: audit_has(cluster, f"system:serviceaccount:{namespace}:reader", "list", "configmaps", start))
        granted = cluster_role_grants(admin, "edit")

    kubeconfig = str(cluster.kubeconfig)
    code, out, err = run_cli(capsys, "unused", log, "--kubeconfig", kubeconfig, "--since", start, "-o", "json")
    assert code == 3, err  # the default 7-day window is not met: nothing is called unused
    assert json.loads(out)["findings"] == []
    assert "Not judged" in err

    code, out, err = run_cli(capsys, "unused", log, "--kubeconfig", kubeconfig, "--since", start,
                             "--min-window", "0s", "-o", "json")  # fmt: skip
    assert code == 0, err
    findings = [f for f in json.loads(out)["findings"] if f["subject"]["namespace"] == namespace]
    assert [(f["subject"]["name"], f["object"]["kind"], f["object"]["name"]) for f in findings] == [
        ("reader", "RoleBinding", "reader-too-wide")
    ]  # `idle` is bound to edit too but made no request: no finding
    [finding] = findings
    assert finding["role"]["name"] == "edit"
    unused = {(p["apiGroup"], p["resource"], verb) for p in finding["unused"] for verb in p["verbs"]}
    used = {("", "configmaps", "get"), ("", "configmaps", "list")}
    assert used <= granted
    assert unused == granted - used


def test_damaged_copies_of_the_real_log_are_reported_not_fatal(
    cluster: Cluster, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real audit log, damaged three ways (a malformed line, an audit.k8s.io/v1beta1 event, a truncated gzip
    rotation): the suggestion is still written from every readable line, and every problem is named."""
    start = now_rfc3339()
    with cluster.api_client() as admin:
        kubernetes.client.CoreV1Api(admin).create_namespaced_service_account(namespace, {"metadata": {"name": APP}})
        kubernetes.client.CoreV1Api(admin).create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
        bind_edit(admin, namespace, APP)
        with cluster.client_for_token(sa_token(admin, namespace, APP)) as app:
            kubernetes.client.CoreV1Api(app).read_namespaced_config_map("c", namespace)
            kubernetes.client.CoreV1Api(app).list_namespaced_pod(namespace)
    username = f"system:serviceaccount:{namespace}:{APP}"
    wait_for(lambda: audit_has(cluster, username, "list", "pods", start))
    real = [line for line in cluster.control_plane.audit_log_path.read_bytes().splitlines(keepends=True)
            if json.loads(line)["requestReceivedTimestamp"] >= start]  # fmt: skip
    ours = [i for i, line in enumerate(real) if username.encode() in line]
    beta = json.loads(real[ours[0]])
    beta["apiVersion"] = "audit.k8s.io/v1beta1"
    damaged = tmp_path / "audit.log"
    damaged.write_bytes(b"".join(real[:2]) + b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","st\n'
                        + json.dumps(beta).encode() + b"\n" + b"".join(real))  # fmt: skip
    rotated = tmp_path / "audit-1.log.gz"
    rotated.write_bytes(gzip.compress(b"".join(real) * 20)[:-100])

    code, out, err = run_cli(capsys, "suggest", str(damaged), str(rotated), "--sa", f"{namespace}:{APP}")
    assert code == 1  # written, but partial
    assert f"{damaged}: 1 line(s) malformed-json (line 3)" in err
    assert f"{damaged}: 1 line(s) unsupported-api-version (line 4)" in err
    assert f"{rotated}: gzip stream truncated after line" in err
    assert out.startswith("# WARNING: partial input")
    assert yaml.safe_load(out)["spec"]["rbac"]["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["c"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]

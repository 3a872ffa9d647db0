"""Cluster-tier fixtures: the operator running in-process (kopf's KopfRunner) against the real control plane."""

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner

from access_hygiene.clock import parse_instant
from access_hygiene.localcluster.controlplane import OPERATOR_USER
from tests.conftest import Cluster

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
OPERATOR_ENV = {
    "ACCESS_HYGIENE_MODE": "audit",
    "ACCESS_HYGIENE_METRICS_PORT": "0",
    "ACCESS_HYGIENE_DRIFT_INTERVAL_SECONDS": "2",
    "ACCESS_HYGIENE_OPERATOR_NAMESPACE": "access-hygiene",
}


class CapturedLog(logging.Handler):
    """Every record the in-process operator's loggers let through (what it prints), as it comes: KopfRunner's output
    is there only once the operator has exited."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, since: float = 0.0, until: float = float("inf")) -> list[str]:
        """Formatted lines of records created between the two unix times."""
        return [
            f"{r.levelname} {r.name}: {r.getMessage()}{' [traceback]' if r.exc_info else ''}"
            for r in list(self.records)
            if since <= r.created <= until
        ]


@contextmanager
def captured_log(level: int = logging.INFO) -> Iterator[CapturedLog]:
    handler = CapturedLog()
    handler.setLevel(level)
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.25) -> Any:
    """Poll until predicate returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    """Environment of the module's operator; a test module overrides this fixture to change settings."""
    return dict(OPERATOR_ENV)


@contextmanager
def running_operator(kubeconfig: Path, env: dict[str, str]) -> Iterator[KopfRunner]:
    """The operator in-process (kopf) with `env` set for its lifetime; it must stop cleanly."""
    values = {**env, "KUBECONFIG": str(kubeconfig)}
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    args = ["run", "--standalone", "--all-namespaces", "-m", "access_hygiene.handlers"]
    try:
        with KopfRunner(args, timeout=60) as runner:
            yield runner
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output


@pytest.fixture(scope="module")
def operator(crd_installed: Cluster, operator_env: dict[str, str]) -> Iterator[KopfRunner]:
    """The operator, authenticated as its own admin identity so the audit log tells its writes apart."""
    from access_hygiene.k8s import resources
    from access_hygiene.render.grant_ceiling import render_grant_ceiling_role

    with crd_installed.api_client() as api:
        resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
    with running_operator(crd_installed.control_plane.operator_kubeconfig, operator_env) as runner:
        yield runner


def wait_for_authorizer(api: Any, timeout: float = 60.0) -> None:
    """Return once kube-apiserver's RBAC authorizer holds every Role, ClusterRole and binding written (or deleted)
    before the call. It reads them from informers of its own, so a SubjectAccessReview (or a real request) right
    after a write can still be answered from the old state (seen under CI load). Each kind's watch delivers in
    order: a sentinel of each kind, written now, reaches the authorizer only after everything written before it."""
    import kubernetes

    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    name = f"authorizer-sentinel-{uuid.uuid4().hex[:10]}"  # also the user: bound to nothing else
    group = "rbac.authorization.k8s.io"
    subjects = [{"kind": "User", "name": name, "apiGroup": group}]
    try:
        rbac.create_namespaced_role(
            "default", {"metadata": {"name": name}, "rules": [_get_by_name("configmaps", name)]}
        )
        rbac.create_cluster_role({"metadata": {"name": name}, "rules": [_get_by_name("nodes", name)]})
        rbac.create_namespaced_role_binding(
            "default",
            {"metadata": {"name": name}, "roleRef": {"apiGroup": group, "kind": "Role", "name": name},
             "subjects": subjects},
        )  # fmt: skip
        rbac.create_cluster_role_binding(
            {"metadata": {"name": name}, "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": name},
             "subjects": subjects},
        )  # fmt: skip
        wait_for(
            lambda: _user_may(api, name, "configmaps", name, "default") and _user_may(api, name, "nodes", name, ""),
            timeout=timeout,
            interval=0.05,
        )
    finally:
        for delete, args in (
            (rbac.delete_cluster_role_binding, (name,)),
            (rbac.delete_namespaced_role_binding, (name, "default")),
            (rbac.delete_cluster_role, (name,)),
            (rbac.delete_namespaced_role, (name, "default")),
        ):
            try:
                delete(*args)
            except kubernetes.client.ApiException as error:
                if error.status != 404:
                    raise


def _get_by_name(resource: str, name: str) -> dict[str, Any]:
    return {"apiGroups": [""], "resources": [resource], "resourceNames": [name], "verbs": ["get"]}


def _user_may(api: Any, user: str, resource: str, name: str, namespace: str) -> bool:
    import kubernetes

    attributes = {"verb": "get", "resource": resource, "name": name, "namespace": namespace}
    review = kubernetes.client.AuthorizationV1Api(api).create_subject_access_review(
        {"spec": {"user": user, "resourceAttributes": attributes}}
    )
    return bool(review.status.allowed)


def operator_writes(
    cluster: Cluster, since: float, namespace: str | None = None, until: float = float("inf")
) -> list[dict[str, Any]]:
    """Write requests the operator made from `since` until before `until` (unix times), from the audit log."""
    writes = []
    for line in cluster.control_plane.audit_log_path.read_text().splitlines():
        event = json.loads(line)
        if event.get("stage") != "ResponseComplete" or event["user"]["username"] != OPERATOR_USER:
            continue
        if event["verb"] not in WRITE_VERBS:
            continue
        ref = event.get("objectRef") or {}
        if namespace is not None and ref.get("namespace") != namespace:
            continue
        # Microseconds kept: cut to whole seconds, a write in the second `since` falls in would be dropped.
        if since <= parse_instant(event["requestReceivedTimestamp"]).timestamp() < until:
            writes.append({"verb": event["verb"], **ref})
    return writes


def cluster_role_grants(api: Any, name: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every rule of a ClusterRole as the API server serves it."""
    import kubernetes

    role = kubernetes.client.RbacAuthorizationV1Api(api).read_cluster_role(name)
    return {
        (group, resource, verb)
        for rule in role.rules
        for group in rule.api_groups or []
        for resource in rule.resources or []
        for verb in rule.verbs
    }

"""A Pod's container as `podman run` flags, as a kubelet would run it (localcluster/podrun.py).

The real chart Pod, run for real, is tests/cluster/test_image.py; these pin the translation rules one by one.
"""

import copy
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from access_hygiene.localcluster.podrun import (
    ApiAccess,
    materialise_volumes,
    parse_quantity,
    plan_container,
)

pytestmark = pytest.mark.unit
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The shape the API server stores for the chart's operator Pod (abridged).
POD: dict[str, Any] = {
    "metadata": {"name": "op-abc", "namespace": "access-hygiene", "uid": "u-1"},
    "spec": {
        "serviceAccountName": "access-hygiene",
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "operator",
            "image": "localhost/access-hygiene:0.1.0-x",
            "args": ["--liveness=http://0.0.0.0:8080/healthz"],
            "env": [{"name": "ACCESS_HYGIENE_MODE", "value": "audit"},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
            "ports": [{"name": "metrics", "containerPort": 9808}, {"name": "health", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health", "scheme": "HTTP"},
                              "initialDelaySeconds": 10, "periodSeconds": 20, "timeoutSeconds": 5,
                              "failureThreshold": 3},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                             {"name": "kube-api-access-x", "mountPath": TOKEN_DIR, "readOnly": True}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}, {"name": "kube-api-access-x", "projected": {}}],
    },
}  # fmt: skip
VOLUMES = {"tmp": Path("/v/tmp"), "kube-api-access-x": Path("/v/sa")}
ENV = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}


def plan_of(pod: dict[str, Any]) -> list[str]:
    return plan_container(pod, "img:tag", VOLUMES, ENV, name="c").run_args


def test_the_chart_pod_becomes_restricted_podman_flags() -> None:
    plan = plan_container(POD, "img:tag", VOLUMES, ENV, name="c")
    args = plan.run_args
    for flag in ["--network=host", "--pull=never", "--user=65532:65532", "--group-add=65532",
                 "--security-opt=no-new-privileges", "--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL",
                 "--memory=536870912", "--cpu-shares=51", "--ulimit=nofile=4096:4096",
                 "--env=KUBERNETES_SERVICE_HOST=127.0.0.1", "--env=ACCESS_HYGIENE_MODE=audit",
                 "--env=POD_NAMESPACE=access-hygiene", "--volume=/v/tmp:/tmp:rw",
                 f"--volume=/v/sa:{TOKEN_DIR}:ro", "--stop-timeout=30"]:  # fmt: skip
        assert flag in args
    assert "--security-opt=seccomp=unconfined" not in args
    assert args[-2:] == ["img:tag", "--liveness=http://0.0.0.0:8080/healthz"]
    assert plan.grace_seconds == 30
    assert plan.ports == {"metrics": 9808, "health": 8080}
    assert plan.liveness is not None
    assert plan.liveness.url == "http://127.0.0.1:8080/healthz"
    assert (plan.liveness.initial_delay, plan.liveness.period, plan.liveness.failure_threshold) == (10, 20, 3)
    assert plan.readiness is None


def test_without_read_only_root_no_read_only_flag() -> None:
    pod = copy.deepcopy(POD)
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    assert "--read-only" not in plan_of(pod)


def test_the_container_context_overrides_the_pod_context() -> None:
    pod = copy.deepcopy(POD)
    pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 1000
    assert "--user=1000:65532" in plan_of(pod)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"runAsUser": 0}, "runAsNonRoot with runAsUser 0"),
        ({"seccompProfile": {"type": "Localhost", "localhostProfile": "x.json"}}, "seccompProfile Localhost"),
    ],
)
def test_what_a_kubelet_would_refuse_or_cannot_be_done_here_is_refused(change: dict[str, Any], message: str) -> None:
    pod = copy.deepcopy(POD)
    pod["spec"]["securityContext"].update(change)
    with pytest.raises(RuntimeError, match=message):
        plan_of(pod)


def test_a_mount_of_a_volume_not_materialised_is_refused() -> None:
    with pytest.raises(RuntimeError, match="'tmp' was not materialised"):
        plan_container(POD, "img:tag", {"kube-api-access-x": Path("/v/sa")}, ENV, name="c")


def test_unsupported_env_source_is_refused() -> None:
    pod = copy.deepcopy(POD)
    pod["spec"]["containers"][0]["env"].append({"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
    with pytest.raises(RuntimeError, match="env X"):
        plan_of(pod)


def test_a_probe_on_an_unknown_port_name_is_refused() -> None:
    pod = copy.deepcopy(POD)
    pod["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = "admin"
    with pytest.raises(RuntimeError, match="'admin' is not a named containerPort"):
        plan_of(pod)


@pytest.mark.parametrize(
    ("quantity", "value"), [("512Mi", 536870912), ("1Gi", 2**30), ("50m", 0.05), ("2", 2), ("1.5", 1.5), ("1k", 1000)]
)
def test_quantities(quantity: str, value: float) -> None:
    assert float(parse_quantity(quantity)) == pytest.approx(value)


def test_empty_dir_is_world_writable_and_group_owned_by_fs_group(tmp_path: Path) -> None:
    pod = copy.deepcopy(POD)
    pod["spec"]["securityContext"]["fsGroup"] = os.getgid()
    pod["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    api = ApiAccess("https://127.0.0.1:1", tmp_path / "ca.crt", "unused: no API call for an emptyDir")
    (directory,) = materialise_volumes(api, pod, tmp_path / "volumes").values()
    mode = directory.stat().st_mode
    assert stat.S_IMODE(mode) == 0o2777
    assert directory.stat().st_gid == os.getgid()


def test_unsupported_volume_types_are_refused(tmp_path: Path) -> None:
    pod = copy.deepcopy(POD)
    pod["spec"]["volumes"] = [{"name": "data", "hostPath": {"path": "/etc"}}]
    api = ApiAccess("https://127.0.0.1:1", tmp_path / "ca.crt", "unused")
    with pytest.raises(RuntimeError, match="'data': type \\['hostPath'\\] is not supported"):
        materialise_volumes(api, pod, tmp_path / "volumes")

"""The operator image, built from the project's Dockerfile, run as the chart runs it: podman + runc, no node.

The chart is installed for real (`helm install`) into a control plane of this module's own (a clean audit log). The
ReplicaSet controller creates the operator Pod, which stays Pending (no node, no scheduler): that Pod, as the API
server stored it (Pod Security "restricted" admitted it, the ServiceAccount plugin added its token volume), is run
with podman the way a kubelet would (access_hygiene/localcluster/podrun.py): the chart's ServiceAccount token bound
to that Pod, ca.crt and namespace at /var/run/secrets/kubernetes.io/serviceaccount, the chart's user, read-only
root filesystem, dropped capabilities, env, args, probes and grace period. The only difference from a node: no CNI,
so the container shares the host network to reach the API server on loopback (KUBERNETES_SERVICE_HOST/PORT).

Needs podman, runc and mmdebstrap (Debian packages): without them the module is skipped with that reason, except
with CI=true, where it fails. Figures (build, size, start -> ready, examples Ready) are printed at the end.
"""

import json
import os
import subprocess
import tarfile
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest
from scripts.render_chart import CHART, find_helm

from access_hygiene.k8s.bootstrap import apply_manifests, load_manifests
from access_hygiene.localcluster import ControlPlane
from access_hygiene.localcluster.controlplane import free_port
from access_hygiene.localcluster.image import BuiltImage, Podman, build_image, export_image, missing_tools
from access_hygiene.localcluster.podrun import (
    SERVICE_ACCOUNT_DIR,
    ApiAccess,
    ContainerPlan,
    PodContainer,
    materialise_volumes,
    plan_container,
)
from tests.cluster.conftest import wait_for
from tests.cluster.test_helm_install import audit_events_of, forbidden_requests, ready_reason
from tests.conftest import REPO_ROOT, Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.image]
RELEASE = "access-hygiene"
NAMESPACE = "access-hygiene"
FULLNAME = "access-hygiene"  # the chart's fullname when the release name is the chart name
EXAMPLES = REPO_ROOT / "examples"
GROUP, VERSION, PLURAL = "accesshygiene.io", "v1alpha1", "accesspolicies"


@pytest.fixture(scope="module")
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Measured figures, printed once the module is done."""
    values: dict[str, str] = {}
    yield values
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and values:
        with capture.global_and_fixture_disabled():  # a teardown's output is captured otherwise
            reporter.write_line("")
            reporter.write_line("image figures: " + "; ".join(f"{key}: {value}" for key, value in values.items()))


@pytest.fixture(scope="module")
def image(figures: dict[str, str]) -> BuiltImage:
    missing = missing_tools()
    if missing:
        reason = f"the image tier needs {', '.join(missing)} (Debian: apt-get install podman runc mmdebstrap)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)
    built = build_image()
    if built.cached:
        figures["image build (warm, cached)"] = f"{built.seconds:.1f} s"
    elif built.base_seconds:
        figures["image build (cold)"] = f"{built.seconds:.0f} s (base {built.base_seconds:.0f} s)"
    else:
        figures["image build (sources changed, base cached)"] = f"{built.seconds:.0f} s"
    figures["image size"] = f"{built.size_bytes / 1e6:.0f} MB"
    return built


@pytest.fixture(scope="module")
def image_cluster() -> Iterator[Cluster]:
    if os.environ.get("ACCESS_HYGIENE_SKIP_CLUSTER") == "1" and os.environ.get("CI") != "true":
        pytest.skip("ACCESS_HYGIENE_SKIP_CLUSTER=1: cluster tests need the real control plane")
    with ControlPlane(audit_log=True) as control_plane:
        yield Cluster(control_plane)


@dataclass
class Installed:
    cluster: Cluster
    api: ApiAccess  # the control plane's admin, for the kubelet's share of work
    metrics_port: int
    health_port: int

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{NAMESPACE}:{FULLNAME}"


def helm(cluster: Cluster, *args: str) -> str:
    command = [str(find_helm()), *args, "--kubeconfig", str(cluster.kubeconfig), "--namespace", NAMESPACE]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=180)
    assert result.returncode == 0, f"helm {' '.join(args[:2])} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(image: BuiltImage, image_cluster: Cluster) -> Installed:
    """`helm install` of the chart with the local image (pull policy Never); host ports free on this machine."""
    repository, tag = image.ref.rsplit(":", 1)
    metrics_port, health_port = free_port(), free_port()
    with image_cluster.api_client() as api:
        labels = {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE, "labels": labels}})
    helm(image_cluster, "install", RELEASE, str(CHART),
         "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
         "--set", f"metrics.port={metrics_port}", "--set", f"health.port={health_port}",
         # One Pod: this tier runs the image without a node (localcluster/podrun.py); two replicas and their
         # leader election are tests/cluster/test_ha.py's.
         "--set", "replicaCount=1")  # fmt: skip
    control_plane = image_cluster.control_plane
    access = ApiAccess(control_plane.server, control_plane.ca_cert, control_plane.admin_token)
    return Installed(image_cluster, access, metrics_port, health_port)


@pytest.fixture(scope="module")
def operator_pod(installed: Installed) -> dict[str, Any]:
    """The operator Pod the ReplicaSet controller created from the chart's Deployment, as the API server has it."""
    path = f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app.kubernetes.io/instance%3D{RELEASE}"

    def pods() -> list[dict[str, Any]]:
        return list(installed.api.request("GET", path)["items"])

    (pod,) = wait_for(pods, timeout=60)
    return pod


@pytest.fixture(scope="module")
def examples(installed: Installed) -> list[tuple[str, str]]:
    """examples/ applied (namespaces first) before the operator starts: (namespace, name) of each AccessPolicy."""
    manifests = load_manifests([EXAMPLES])
    with installed.cluster.api_client() as api:
        apply_manifests(api, manifests)
    return [(m["metadata"]["namespace"], m["metadata"]["name"]) for m in manifests if m["kind"] == "AccessPolicy"]


@dataclass
class Running:
    container: PodContainer
    plan: ContainerPlan
    started_wall: float  # unix time just before `podman run`: the operator's audit events come after it
    ready_seconds: float  # container start -> /healthz answers


@pytest.fixture(scope="module")
def running(
    image: BuiltImage,
    installed: Installed,
    operator_pod: dict[str, Any],
    examples: list[tuple[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
    figures: dict[str, str],
) -> Iterator[Running]:
    volumes = materialise_volumes(installed.api, operator_pod, tmp_path_factory.mktemp("pod-volumes"))
    port = installed.cluster.server.rsplit(":", 1)[1]
    kubelet_env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
    plan = plan_container(operator_pod, image.ref, volumes, kubelet_env, name=f"ah-image-test-{uuid.uuid4().hex[:8]}")
    started_wall = time.time() - 1
    with PodContainer(Podman.default(), plan) as container:
        liveness = plan.liveness
        assert liveness is not None, "the chart's Deployment has no livenessProbe"

        def answers() -> bool:
            if not container.running():
                raise AssertionError(f"the operator container exited:\n{container.logs()[-4000:]}")
            return liveness.check()

        wait_for(answers, timeout=120, interval=0.1)
        ready = time.monotonic() - container.started
        figures["container start -> /healthz"] = f"{ready:.1f} s"
        yield Running(container, plan, started_wall, ready)


def test_pod_is_translated_with_the_chart_settings(running: Running, installed: Installed) -> None:
    """The chart's security context, env and token mount reach `podman run` (the Pod the API server admitted)."""
    args = running.plan.run_args
    for flag in ("--user=65532:65532", "--group-add=65532", "--read-only", "--read-only-tmpfs=false",
                 "--cap-drop=ALL", "--security-opt=no-new-privileges", "--memory=536870912",
                 f"--env=ACCESS_HYGIENE_METRICS_PORT={installed.metrics_port}",
                 f"--env=ACCESS_HYGIENE_OPERATOR_NAMESPACE={NAMESPACE}",
                 "--env=ACCESS_HYGIENE_MODE=audit"):  # fmt: skip
        assert flag in args
    assert any(arg.endswith(f":{SERVICE_ACCOUNT_DIR}:ro") for arg in args), args
    assert args[-1] == f"--liveness=http://0.0.0.0:{installed.health_port}/healthz"
    assert running.plan.grace_seconds == 30  # the API's default: the chart sets none


def test_container_runs_non_root_read_only_without_capabilities(running: Running) -> None:
    status = running.container.exec("cat", "/proc/1/status")
    assert status.returncode == 0, status.stderr
    fields = dict(line.split(":\t", 1) for line in status.stdout.splitlines() if ":\t" in line)
    assert fields["Uid"].split() == ["65532"] * 4
    assert fields["Gid"].split() == ["65532"] * 4
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["CapBnd"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"  # a filter: the runtime's default profile
    refused = running.container.exec("touch", "/opt/access-hygiene/written")
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr
    scratch = running.container.exec("touch", "/tmp/written")  # the chart's emptyDir
    assert scratch.returncode == 0, scratch.stderr
    assert running.container.inspect()["HostConfig"]["ReadonlyRootfs"] is True


def test_service_account_files_are_the_pod_bound_token_ca_and_namespace(
    running: Running, installed: Installed, operator_pod: dict[str, Any]
) -> None:
    listed = running.container.exec("ls", SERVICE_ACCOUNT_DIR)
    assert sorted(listed.stdout.split()) == ["ca.crt", "namespace", "token"]
    namespace = running.container.exec("cat", f"{SERVICE_ACCOUNT_DIR}/namespace").stdout
    assert namespace == NAMESPACE
    ca = running.container.exec("cat", f"{SERVICE_ACCOUNT_DIR}/ca.crt").stdout
    assert ca == installed.cluster.control_plane.ca_cert.read_text()
    token = running.container.exec("cat", f"{SERVICE_ACCOUNT_DIR}/token").stdout
    with installed.cluster.client_for_token(token, "operator-pod") as api:
        review: Any = kubernetes.client.AuthenticationV1Api(api).create_self_subject_review({})
    user = review.status.user_info
    assert user.username == installed.username
    # Bound to the Pod, as the kubelet's token is: it dies with the Pod.
    assert user.extra["authentication.kubernetes.io/pod-name"] == [operator_pod["metadata"]["name"]]
    assert user.extra["authentication.kubernetes.io/pod-uid"] == [operator_pod["metadata"]["uid"]]


def test_examples_become_ready(running: Running, installed: Installed, examples: list[tuple[str, str]],
                               figures: dict[str, str]) -> None:  # fmt: skip
    assert len(examples) >= 3
    with installed.cluster.api_client() as api:
        custom: Any = kubernetes.client.CustomObjectsApi(api)

        def not_ready() -> list[str]:
            return [f"{ns}/{name}: {ready_reason(custom, ns, name)}" for ns, name in examples
                    if ready_reason(custom, ns, name) != "True/Reconciled"]  # fmt: skip

        wait_for(lambda: not not_ready(), timeout=60)
    figures["container start -> examples Ready"] = (
        f"{time.monotonic() - running.container.started:.1f} s ({len(examples)} policies)"
    )


def test_liveness_probe_passes_as_the_kubelet_probes_it(running: Running, figures: dict[str, str]) -> None:
    """The chart's livenessProbe (initial delay, period, failure threshold): the first probe already succeeds."""
    liveness = running.plan.liveness
    assert liveness is not None
    assert liveness.path == "/healthz"
    # The operator answered before the kubelet's first probe would have come, and that probe succeeds.
    assert running.ready_seconds < liveness.initial_delay
    assert running.container.probe_like_kubelet(liveness) == 0
    figures["readinessProbe"] = "none in the chart" if running.plan.readiness is None else "present"
    if running.plan.readiness is not None:
        assert running.container.probe_like_kubelet(running.plan.readiness) == 0


def test_metrics_serve_access_hygiene_series(running: Running, installed: Installed) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{installed.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    series = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("access_hygiene_")}
    assert {"access_hygiene_build_info", "access_hygiene_last_scan_timestamp_seconds"} <= series, sorted(series)
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f'access_hygiene_build_info{{version="{version}"}} 1.0' in text


def test_the_operator_ran_as_the_chart_account_without_rbac_denials(running: Running, installed: Installed) -> None:
    events = audit_events_of(installed.cluster, installed.username, running.started_wall)
    assert events, "no request of the chart's ServiceAccount reached the API server"
    scanned = {e["objectRef"]["resource"] for e in events if e["verb"] == "list" and "namespace" not in e["objectRef"]}
    assert {"cronjobs", "clusterrolebindings", "pods", "accesspolicies"} <= scanned, sorted(scanned)
    assert {"patch"} <= {e["verb"] for e in events}, "the operator wrote nothing as the chart's account"
    assert forbidden_requests(events) == [], "the chart's RBAC is missing what these requests need"


def test_the_operator_logged_no_error(running: Running) -> None:
    """Before the negative check below: kopf and the controller both reached the API server and worked."""
    logs = running.container.logs()
    errors = [line for line in logs.splitlines() if "Traceback" in line or " ERROR " in line or "[ERROR" in line]
    assert errors == [], logs[-6000:]


def test_a_verb_missing_from_the_chart_shows_as_a_denial(running: Running, installed: Installed) -> None:
    """The check above fails when the chart lacks a verb: `patch` on accesspolicies/status removed for a while."""
    name = f"{FULLNAME}"
    since = time.time() - 1
    with installed.cluster.api_client() as api:
        rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api)
        custom: Any = kubernetes.client.CustomObjectsApi(api)
        original = rbac.read_cluster_role(name)
        rules = api.sanitize_for_serialization(original.rules)
        status_rules = [r for r in rules if r.get("resources") == ["accesspolicies/status"]]
        assert status_rules, rules
        assert "patch" in status_rules[0]["verbs"], rules
        status_rules[0]["verbs"].remove("patch")
        rbac.patch_cluster_role(name, {"rules": rules})
        try:
            policy = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AccessPolicy",
                      "metadata": {"name": "missing-verb-probe", "namespace": "shop"},
                      "spec": {"mode": "audit", "network": {"dns": True}}}  # fmt: skip
            custom.create_namespaced_custom_object(GROUP, VERSION, "shop", PLURAL, policy)

            def refused() -> list[str]:
                return forbidden_requests(audit_events_of(installed.cluster, installed.username, since))

            assert "patch accesspolicies shop" in wait_for(refused, timeout=60)
            # The operator says so too (a permanent failure, with the API server's reason).
            wait_for(lambda: 'cannot patch resource "accesspolicies/status"' in running.container.logs())
        finally:
            rbac.patch_cluster_role(name, {"rules": api.sanitize_for_serialization(original.rules)})
        # A 403 is not retried (the operator reports RBAC refusals instead of hammering the API server); with the
        # verb back, the policy's next change is reconciled and its status written.
        custom.patch_namespaced_custom_object(GROUP, VERSION, "shop", PLURAL, "missing-verb-probe",
                                              {"spec": {"mode": "enforce"}})  # fmt: skip
        wait_for(lambda: ready_reason(custom, "shop", "missing-verb-probe") == "True/Reconciled", timeout=60)
        custom.delete_namespaced_custom_object(GROUP, VERSION, "shop", PLURAL, "missing-verb-probe")


def test_sigterm_stops_the_operator_within_the_grace_period(running: Running, figures: dict[str, str]) -> None:
    stopped = running.container.stop()
    figures["SIGTERM -> exit"] = f"{stopped.seconds:.1f} s (grace {running.plan.grace_seconds} s)"
    logs = running.container.logs()[-4000:]
    assert not stopped.killed, f"SIGKILLed after the grace period:\n{logs}"
    assert stopped.seconds < running.plan.grace_seconds
    assert stopped.exit_code == 0, logs


def test_the_image_exports_as_an_archive_a_node_can_import(image: BuiltImage) -> None:
    """A docker-archive naming the image, for `ctr images import` on a node without a registry."""
    path = export_image(image)
    with tarfile.open(path) as archive:
        member = archive.extractfile("manifest.json")
        assert member is not None
        (manifest,) = json.load(member)
    assert manifest["RepoTags"] == [image.ref]
    assert export_image(image) == path  # cached

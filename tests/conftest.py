"""Shared fixtures. `cluster` is a real control plane (etcd + kube-apiserver + kube-controller-manager)."""

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
import yaml

from access_hygiene.localcluster import ControlPlane

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = REPO_ROOT / "crds" / "accesspolicies.accesshygiene.io.yaml"


@dataclass
class Cluster:
    control_plane: ControlPlane

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def server(self) -> str:
        return self.control_plane.server

    def api_client(self) -> kubernetes.client.ApiClient:
        """A fresh admin (system:masters) client."""
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def client_for_token(self, token: str, user: str = "token-user") -> kubernetes.client.ApiClient:
        path = self.control_plane.workdir / f"kubeconfig-{uuid.uuid4().hex[:8]}"  # type: ignore[operator]
        path.write_text(self.control_plane.render_kubeconfig(token, user))
        return kubernetes.config.new_client_from_config(config_file=str(path))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.environ.get("ACCESS_HYGIENE_SKIP_CLUSTER") == "1" and os.environ.get("CI") != "true":
        pytest.skip("ACCESS_HYGIENE_SKIP_CLUSTER=1: cluster tests need the real control plane")
    with ControlPlane(audit_log=True) as control_plane:
        yield Cluster(control_plane)


@pytest.fixture(scope="module")
def fresh_cluster() -> Iterator[Cluster]:
    """A control plane of the module's own, for tests that compare against what a pristine API server serves
    (other modules leave aggregated ClusterRoles, CRDs and policies in the shared one)."""
    if os.environ.get("ACCESS_HYGIENE_SKIP_CLUSTER") == "1" and os.environ.get("CI") != "true":
        pytest.skip("ACCESS_HYGIENE_SKIP_CLUSTER=1: cluster tests need the real control plane")
    with ControlPlane() as control_plane:
        yield Cluster(control_plane)


@pytest.fixture(scope="session")
def crd_installed(cluster: Cluster) -> Cluster:
    """The accesshygiene.io CRDs (AccessPolicy and the just-in-time access kinds), applied from the committed files
    and Established: the operator watches them all (a kind whose CRD is missing is looked for again and again);
    the admission parameters' CRD."""
    from access_hygiene.k8s.crds import install_crd
    from access_hygiene.models.crd import KINDS
    from access_hygiene.render.admission_parameters import parameters_crd

    with cluster.api_client() as api:
        install_crd(api, yaml.safe_load(CRD_PATH.read_text()))
        for definition in KINDS:
            install_crd(api, yaml.safe_load((REPO_ROOT / "crds" / definition.file_name).read_text()))
        install_crd(api, parameters_crd())
    return cluster


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name}})
        yield name
        core.delete_namespace(name)

"""The local node's pure parts: images packed without a registry, and configurations that keep every listener and
route inside the machine."""

import hashlib
import io
import ipaddress
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from access_hygiene.localcluster.node import (
    CLUSTER_CIDR,
    NODE_IP,
    SERVICE_CIDR,
    component_versions,
    image_specs,
    render_cni_config,
    render_containerd_config,
    render_kube_proxy_config,
    render_kubelet_config,
)
from access_hygiene.localcluster.node_addons import COREFILE, render_addons
from access_hygiene.localcluster.node_images import ImageSpec, build_archive, write_archive

pytestmark = pytest.mark.unit


def _members(archive: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {member.name: member for member in tar.getmembers()}


def _read(archive: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    path = tmp_path / "probe"
    path.write_bytes(b"\x7fELF static probe")
    return path


def test_archive_is_an_oci_layout_containerd_names_after_the_image(binary: Path) -> None:
    archive = build_archive(ImageSpec("localhost/probe:v1", {"/bin/probe": binary}, ["/bin/probe"]))
    assert json.loads(_read(archive, "oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    (descriptor,) = json.loads(_read(archive, "index.json"))["manifests"]
    assert descriptor["annotations"] == {
        "io.containerd.image.name": "localhost/probe:v1",
        "org.opencontainers.image.ref.name": "v1",
    }
    assert descriptor["platform"] == {"architecture": "amd64", "os": "linux"}

    def blob(digest: str) -> bytes:
        data = _read(archive, "blobs/sha256/" + digest.removeprefix("sha256:"))
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest  # content-addressed for real
        return data

    manifest = json.loads(blob(descriptor["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    (layer_descriptor,) = manifest["layers"]
    layer = blob(layer_descriptor["digest"])
    assert layer_descriptor["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    # An uncompressed layer: its diff_id is its digest.
    assert config["rootfs"]["diff_ids"] == [layer_descriptor["digest"]]
    assert config["config"]["Entrypoint"] == ["/bin/probe"]
    files = _members(layer)
    assert files["bin/probe"].mode == 0o755
    assert files["bin/probe"].isfile()
    assert files["bin"].isdir()
    assert files["tmp"].mode == 0o1777
    assert _read(layer, "bin/probe") == binary.read_bytes()


def test_archive_is_deterministic_and_cached_by_content(binary: Path, tmp_path: Path) -> None:
    spec = ImageSpec("localhost/probe:v1", {"/probe": binary}, ["/probe"])
    assert build_archive(spec) == build_archive(spec)
    first = write_archive(spec, tmp_path / "images")
    stamp = first.stat().st_mtime_ns
    assert write_archive(spec, tmp_path / "images") == first
    assert first.stat().st_mtime_ns == stamp
    binary.write_bytes(b"\x7fELF another build")
    assert write_archive(spec, tmp_path / "images") != first


def test_images_and_versions_follow_the_node_build_directory() -> None:
    bin_dir = Path("/c/node-k8s-v1.36.3-containerd-v2.4.2-cni-v1.10.0-coredns-v1.15.0-knp-v0.8.0/bin")
    assert component_versions(bin_dir) == {
        "k8s": "v1.36.3", "containerd": "v2.4.2", "cni": "v1.10.0", "coredns": "v1.15.0", "knp": "v0.8.0",
    }  # fmt: skip
    names = {key: spec.name for key, spec in image_specs(bin_dir).items()}
    assert names == {
        "pause": "localhost/pause:v1.36.3",
        "agnhost": "localhost/agnhost:v1.36.3",
        "coredns": "localhost/coredns:v1.15.0",
        "kube-network-policies": "localhost/kube-network-policies:v0.8.0",
    }


_LOCAL_NETWORKS = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", f"{NODE_IP}/32", CLUSTER_CIDR, SERVICE_CIDR)]
_ADDRESS = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3})(?:/(\d{1,2}))?")


def _addresses(value: Any) -> set[str]:
    return {match.group(0) for match in _ADDRESS.finditer(json.dumps(value))}


def _outside(addresses: set[str]) -> set[str]:
    return {
        a for a in addresses if not any(ipaddress.ip_network(a, strict=False).subnet_of(n) for n in _LOCAL_NETWORKS)
    }


def test_node_listens_and_routes_inside_the_machine_only(tmp_path: Path) -> None:
    kubelet = render_kubelet_config(tmp_path, tmp_path / "ca.crt", tmp_path / "containerd.sock", 10250, 10248)
    proxy = render_kube_proxy_config(tmp_path / "kubeconfig", 10256, 10249)
    addons = render_addons({"coredns": "c", "kube-network-policies": "k"}, 9080)
    containerd = render_containerd_config(tmp_path, tmp_path / "bin", "/usr/sbin/runc", "pause", tmp_path / "s.json")
    # The pods' default route (0.0.0.0/0 via the bridge) is the only address outside the local ranges.
    assert _outside(_addresses(render_cni_config(tmp_path))) == {"0.0.0.0/0"}
    assert _outside(_addresses([kubelet, proxy, addons, containerd])) == set()
    assert kubelet["address"] == NODE_IP
    assert kubelet["healthzBindAddress"] == "127.0.0.1"
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["authentication"]["anonymous"] == {"enabled": False}
    assert proxy["nodePortAddresses"] == [f"{NODE_IP}/32"]
    assert 'stream_server_address = "127.0.0.1"' in containerd
    # Nothing is forwarded outside the cluster's own names.
    assert "forward" not in COREFILE


def test_kubelet_runs_on_this_machines_cgroup_v1_with_cgroupfs(tmp_path: Path) -> None:
    kubelet = render_kubelet_config(tmp_path, tmp_path / "ca.crt", tmp_path / "containerd.sock", 1, 2)
    assert kubelet["failCgroupV1"] is False
    assert kubelet["cgroupDriver"] == "cgroupfs"
    # Images cannot be pulled again: never garbage-collected.
    assert kubelet["imageGCHighThresholdPercent"] == 100
    containerd = render_containerd_config(tmp_path, tmp_path / "bin", "/usr/sbin/runc", "pause", tmp_path / "s.json")
    assert "restrict_oom_score_adj = true" in containerd
    assert "SystemdCgroup = false" in containerd

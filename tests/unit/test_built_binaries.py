"""One way to find the local cluster's cached builds, for the control plane and the node alike."""

from pathlib import Path

import pytest

from access_hygiene.localcluster.binaries import built_binaries
from access_hygiene.localcluster.controlplane import ControlPlaneError, find_binaries
from access_hygiene.localcluster.node import NODE_BINARIES, NodeError, find_node_binaries

pytestmark = pytest.mark.unit


def test_the_environment_names_the_directory_and_every_binary_must_be_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACCESS_HYGIENE_BIN_DIR", str(tmp_path))
    monkeypatch.setenv("ACCESS_HYGIENE_NODE_BIN_DIR", str(tmp_path))
    with pytest.raises(ControlPlaneError, match=r"missing control plane binaries in .*: etcd, kube-apiserver"):
        find_binaries()
    with pytest.raises(NodeError, match=rf"missing node binaries in .*: {NODE_BINARIES[0]}"):
        find_node_binaries()
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", *NODE_BINARIES):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)  # (cni/bridge and the like)
        (tmp_path / name).write_text("")
    assert find_binaries() == tmp_path
    assert find_node_binaries() == tmp_path


def test_without_building_it_says_how_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCESS_HYGIENE_BIN_DIR", raising=False)
    monkeypatch.delenv("ACCESS_HYGIENE_NODE_BIN_DIR", raising=False)
    with pytest.raises(ControlPlaneError, match=r"^control plane binaries are not built; run controlplane/build.sh$"):
        find_binaries(build=False)
    with pytest.raises(NodeError, match=r"not built; run controlplane/node/build.sh \(make node\)$"):
        find_node_binaries(build=False)


def test_a_build_script_that_is_not_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_BIN_DIR", raising=False)
    with pytest.raises(RuntimeError, match=r"set X_BIN_DIR: controlplane/none\.sh is not next to this package"):
        built_binaries(env_var="X_BIN_DIR", script="controlplane/none.sh", names=(), what="x", error=RuntimeError)

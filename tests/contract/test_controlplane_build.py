"""controlplane/build.sh's cache: a finished build is reused from any checkout of the same sources."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.contract
ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("build.sh", "go.mod", "go.sum", "tools.go", "cmd/etcd/main.go")


def _checkout(at: Path) -> Path:
    for name in SOURCES:
        (at / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "controlplane" / name, at / name)
    return at / "build.sh"


def _fake_go(bin_dir: Path, succeed: bool) -> None:
    """A `go` that writes empty binaries (-o FILE, or GOBIN/helm) or, when it must not be called, fails."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    body = (
        'out=""; prev=""; for a in "$@"; do [[ $prev == -o ]] && out=$a; prev=$a; done\n'
        '[[ -n $out ]] || out="$GOBIN/helm"; : > "$out"; chmod +x "$out"\n'
        if succeed
        else 'echo "go called: the cached build was not reused" >&2; exit 1\n'
    )
    (bin_dir / "go").write_text("#!/usr/bin/env bash\n" + body)
    (bin_dir / "go").chmod(0o755)


def test_a_build_is_reused_from_another_checkout_of_the_same_sources(tmp_path: Path) -> None:
    """Each git worktree used to get a stamp of its own (sha256sum's output names the files), so every worktree
    relinked every binary into the one shared cache, under the feet of the others' running tests."""
    cache = tmp_path / "cache"
    first, second = _checkout(tmp_path / "one" / "controlplane"), _checkout(tmp_path / "two" / "controlplane")
    _fake_go(tmp_path / "go-builds", succeed=True)
    _fake_go(tmp_path / "go-fails", succeed=False)
    env = {**os.environ, "ACCESS_HYGIENE_CACHE": str(cache)}
    built = subprocess.run(["bash", str(first)], env={**env, "PATH": f"{tmp_path / 'go-builds'}:{env['PATH']}"},
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert built.returncode == 0, built.stderr
    reused = subprocess.run(["bash", str(second)], env={**env, "PATH": f"{tmp_path / 'go-fails'}:{env['PATH']}"},
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert reused.returncode == 0, reused.stderr
    assert reused.stdout == built.stdout

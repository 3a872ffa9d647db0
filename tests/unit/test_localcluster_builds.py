"""Finding the local cluster's binaries: the override, the messages, and one build at a time per script."""

import re
import threading
import time
from pathlib import Path

import pytest

from access_hygiene.localcluster import builds

pytestmark = pytest.mark.unit


class BuildFailedError(RuntimeError):
    pass


def _fake_repo(tmp_path: Path, body: str) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "build.sh").write_text(body)
    return repo


def _find(**overrides: object) -> Path:
    arguments: dict[str, object] = {
        "env_var": "TEST_BUILDS_BIN_DIR",
        "script": "scripts/build.sh",
        "binaries": ("tool",),
        "error": BuildFailedError,
        "make_target": "tools",
    }
    arguments.update(overrides)
    return builds.find_built_binaries(**arguments)  # type: ignore[arg-type]


def test_the_environment_override_wins_and_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_BUILDS_BIN_DIR", str(tmp_path))
    with pytest.raises(BuildFailedError, match=re.escape(f"missing binaries in {tmp_path}: tool")):
        _find()
    (tmp_path / "tool").write_text("")
    assert _find() == tmp_path


def test_messages_say_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_BUILDS_BIN_DIR", raising=False)
    monkeypatch.setattr(builds, "REPO_ROOT", tmp_path)
    not_next = "set TEST_BUILDS_BIN_DIR: scripts/build.sh is not next to this package"
    with pytest.raises(BuildFailedError, match=re.escape(not_next)):
        _find()
    monkeypatch.setattr(builds, "REPO_ROOT", _fake_repo(tmp_path, "exit 3\n"))
    monkeypatch.setenv("ACCESS_HYGIENE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BuildFailedError, match=r"binaries are not built; run scripts/build.sh \(make tools\)"):
        _find(build=False)
    with pytest.raises(BuildFailedError, match=re.escape("scripts/build.sh failed")):
        _find()


def test_concurrent_callers_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    # A build that takes a moment and counts its compilations; a finished cache makes it a no-op, as the real
    # scripts are.
    script = f"""
set -e
if [[ -f {out}/tool ]]; then echo {out}; exit 0; fi
mkdir -p {out}
echo built >> {tmp_path}/compilations
sleep 0.3
touch {out}/tool
echo {out}
"""
    monkeypatch.delenv("TEST_BUILDS_BIN_DIR", raising=False)
    monkeypatch.setattr(builds, "REPO_ROOT", _fake_repo(tmp_path, script))
    monkeypatch.setenv("ACCESS_HYGIENE_CACHE", str(tmp_path / "cache"))
    found: list[Path] = []
    threads = [threading.Thread(target=lambda: found.append(_find())) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert found == [out] * 4
    assert (tmp_path / "compilations").read_text().splitlines() == ["built"]
    assert time.monotonic() - started < 30

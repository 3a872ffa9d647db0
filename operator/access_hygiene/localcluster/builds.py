"""Finding the binaries the local cluster runs: an environment override, or a build script of the repository
whose output is cached under ~/.cache/access-hygiene (a no-op once the cache is complete).

One lock per script: two processes starting at once (parallel test runs in several checkouts) would otherwise
each compile the same Go binaries into the same cache, several times the CPU and a race on the files.
"""

import fcntl
import os
import subprocess
from pathlib import Path

# operator/access_hygiene/localcluster/builds.py -> the repository root is parents[3]
REPO_ROOT = Path(__file__).resolve().parents[3]


def cache_root() -> Path:
    return Path(os.environ.get("ACCESS_HYGIENE_CACHE", str(Path.home() / ".cache" / "access-hygiene")))


def find_built_binaries(
    *,
    env_var: str,
    script: str,
    binaries: tuple[str, ...],
    error: type[Exception],
    make_target: str,
    build: bool = True,
) -> Path:
    """The directory holding `binaries`: the directory `env_var` names, else the last line `script` (a path
    relative to the repository root) prints after building or reusing its cache. Raises `error` with a message
    a user can act on."""
    explicit = os.environ.get(env_var)
    if explicit:
        bin_dir = Path(explicit)
    else:
        script_path = REPO_ROOT / script
        if not script_path.is_file():
            raise error(f"set {env_var}: {script} is not next to this package")
        if not build:
            raise error(f"binaries are not built; run {script} (make {make_target})")
        bin_dir = _run_build_script(script_path, script, error)
    missing = [name for name in binaries if not (bin_dir / name).is_file()]
    if missing:
        raise error(f"missing binaries in {bin_dir}: {', '.join(missing)}")
    return bin_dir


def _run_build_script(script_path: Path, script: str, error: type[Exception]) -> Path:
    lock_path = cache_root() / f".build-{script.replace('/', '-')}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits for a build another process runs, then reuses its cache
        try:
            result = subprocess.run(["bash", str(script_path)], capture_output=True, text=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if result.returncode != 0:
        raise error(f"{script} failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])

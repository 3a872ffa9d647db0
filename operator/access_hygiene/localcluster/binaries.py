"""Finding the cached builds the local cluster runs: an environment variable naming the directory wins; otherwise
the repository's build script runs (a no-op once its cache under ~/.cache/access-hygiene is complete) and prints
the directory; every expected binary must be there."""

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]  # operator/access_hygiene/localcluster/ -> the repository


def built_binaries(
    *,
    env_var: str,
    script: str,
    names: Sequence[str],
    what: str,
    error: type[Exception],
    build: bool = True,
    hint: str = "",
) -> Path:
    """The directory holding `names`: $env_var, or the output of `script` (relative to the repository; not run
    when build is False). Raises `error` saying what is missing and how to get it."""
    explicit = os.environ.get(env_var)
    if explicit:
        bin_dir = Path(explicit)
    else:
        path = REPO_ROOT / script
        if not path.is_file():
            raise error(f"set {env_var}: {script} is not next to this package")
        if not build:
            raise error(f"{what} binaries are not built; run {script}{hint}")
        result = subprocess.run(["bash", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise error(f"{script} failed:\n{result.stderr[-4000:]}")
        bin_dir = Path(result.stdout.strip().splitlines()[-1])
    missing = [name for name in names if not (bin_dir / name).is_file()]
    if missing:
        raise error(f"missing {what} binaries in {bin_dir}: {', '.join(missing)}")
    return bin_dir

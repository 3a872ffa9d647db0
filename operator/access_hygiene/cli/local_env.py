"""The shell environment of `access-hygiene local`: KUBECONFIG and a PATH with kubectl on it.

`access-hygiene local` links kubectl and helm (built by controlplane/build.sh, cached under
~/.cache/access-hygiene) and the access-hygiene command into <workdir>/bin, and prints the two
export lines; `access-hygiene local --print-env` prints them again for a running local default:

    eval "$(access-hygiene local --print-env)"
"""

import shlex
import shutil
import sys
from pathlib import Path

# Commands a person uses against the local default; missing ones are skipped (and reported).
TOOLS = ("kubectl", "helm")
REPO_ROOT = Path(__file__).resolve().parents[3]
REPORT_CRD_FILES = ("openreports.io_reports.yaml", "openreports.io_clusterreports.yaml")


def report_crd_paths() -> list[Path]:
    """The OpenReports CRDs committed under crds/ (the local default installs them)."""
    return [REPO_ROOT / "crds" / name for name in REPORT_CRD_FILES if (REPO_ROOT / "crds" / name).is_file()]


def _link(target: Path, link: Path) -> None:
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def prepare_bin_dir(workdir: Path, binaries: Path | None) -> tuple[Path, list[str]]:
    """<workdir>/bin with kubectl, helm and access-hygiene linked in. Returns (dir, missing tools)."""
    bin_dir = workdir.resolve() / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    missing = []
    for tool in TOOLS:
        source = binaries / tool if binaries is not None else None
        if source is not None and source.is_file():
            _link(source, bin_dir / tool)
        else:
            missing.append(tool)
    command = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "access-hygiene" else None
    command = command or (Path(found) if (found := shutil.which("access-hygiene")) else None)
    if command is not None and command.is_file():
        _link(command, bin_dir / "access-hygiene")
    return bin_dir, missing


def env_lines(workdir: Path) -> list[str]:
    """The export lines for a shell using the local default in `workdir`."""
    root = workdir.resolve()
    return [
        f"export KUBECONFIG={shlex.quote(str(root / 'kubeconfig'))}",
        f"export PATH={shlex.quote(str(root / 'bin'))}:$PATH",
    ]


def print_env(workdir: Path, binaries: Path | None = None) -> int:
    """The export lines of the local default in `workdir` (exit code 2, nothing on stdout, when none runs there:
    no kubeconfig, or its API server does not answer because that local default has stopped).

    With `binaries` (at startup), <workdir>/bin is prepared first and the lines are indented.
    Without (`access-hygiene local --print-env`), they are printed bare, for `eval`.
    """
    from access_hygiene.localcluster.controlplane import why_not_serving

    if not (workdir / "kubeconfig").is_file():
        print(f"error: no local default in {workdir} (start one with `make run`)", file=sys.stderr)
        return 2
    if binaries is None:
        problem = why_not_serving(workdir / "kubeconfig")
        if problem is not None:
            print(f"error: the local default in {workdir} is not running: {problem} (start it with `make run`)",
                  file=sys.stderr)  # fmt: skip
            return 2
        print("\n".join(env_lines(workdir)))
        return 0
    bin_dir, missing = prepare_bin_dir(workdir, binaries)
    print("\n".join(f"  {line}" for line in env_lines(workdir)) + "    # kubectl, helm, access-hygiene")
    if missing:
        print(f"  ({', '.join(missing)} not built, so not in {bin_dir}: run controlplane/build.sh)")
    return 0

"""Copies the OpenReports CRDs (Report, ClusterReport) from their Go module into crds/.

Source of truth: github.com/openreports/reports-api at REPORTS_API_VERSION, directory config/crd,
fetched with the Go toolchain (`go mod download -json`, checksum-verified against the Go checksum
database; offline once it is in the module cache). The files are copied verbatim under a one-line
header. `--check` only reports drift (exit 1); tests/contract/test_openreports_crds.py does the same.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "crds"
REPORTS_API_MODULE = "github.com/openreports/reports-api"
REPORTS_API_VERSION = "v0.2.1"
# CRD file names in the module's config/crd (also their names under crds/).
CRD_FILES = ("openreports.io_reports.yaml", "openreports.io_clusterreports.yaml")
HEADER = (
    f"# Copied verbatim from {REPORTS_API_MODULE}@{REPORTS_API_VERSION} config/crd/%s\n"
    "# by scripts/openreports_crds.py (make generate). Do not edit.\n"
)


def module_dir(version: str = REPORTS_API_VERSION) -> Path:
    """The extracted module in the Go module cache (downloaded and verified when missing)."""
    command = ["go", "mod", "download", "-json", f"{REPORTS_API_MODULE}@{version}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RuntimeError("go not found: the OpenReports CRDs are taken from their Go module") from None
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or info.get("Error") or not info.get("Dir"):
        raise RuntimeError(f"`{' '.join(command)}` failed: {info.get('Error') or result.stderr.strip()}")
    return Path(info["Dir"])


def render_crds(source: Path) -> dict[Path, str]:
    """crds/<file> -> text, for each CRD file of the module."""
    return {CRDS / name: HEADER % name + (source / "config" / "crd" / name).read_text() for name in CRD_FILES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="report drift instead of writing")
    args = parser.parse_args(argv)
    try:
        rendered = render_crds(module_dir())
    except (RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    drift = [path for path, text in rendered.items() if not path.exists() or path.read_text() != text]
    for path in drift:
        if not args.check:
            path.write_text(rendered[path])
        print(f"{'drifted' if args.check else 'wrote'} {path.relative_to(ROOT)}", file=sys.stderr)
    return 1 if args.check and drift else 0


if __name__ == "__main__":
    sys.exit(main())

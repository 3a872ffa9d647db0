"""CLI benchmark: what a user waits for. Runs the real `access-hygiene scan` as a subprocess on the
benchmark's generated RBAC dump (scan_benchmark.generate) and prints, per size and input format, the wall
time, the peak RSS of the child process and the phase breakdown the CLI reports (import, parse, snapshot,
audit, output; wall seconds, from ACCESS_HYGIENE_TIMINGS), and the child's CPU seconds (user + system): on a
shared machine CPU seconds are the steadier figure.

    python benchmarks/cli_benchmark.py [--objects 5000 20000 50000] [--repeat 1] [--formats yaml json]
                                       [--output json] [--keep DIR]

YAML input is the multi-document dump (`scan_benchmark.py --dump`), JSON input a `kind: List` as
`kubectl get -o json` prints it (4-space indentation). Each size N gives N+1 objects (the aggregated
`view` ClusterRole). Not a timed test: figures depend on the machine; with --repeat the median is shown.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from scan_benchmark import generate

PHASES = ("import", "parse", "snapshot", "audit", "output")
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # same text as yaml.safe_dump_all, faster


def write_inputs(objects: list[dict[str, Any]], directory: Path, count: int, formats: list[str]) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    if "yaml" in formats:
        paths["yaml"] = directory / f"dump-{count}.yaml"
        with paths["yaml"].open("w") as stream:
            yaml.dump_all(objects, stream, Dumper=DUMPER, sort_keys=False)
    if "json" in formats:
        paths["json"] = directory / f"dump-{count}.json"
        paths["json"].write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=4))
    return paths


def run_cli(path: Path, output: str) -> dict[str, Any]:
    """One `access-hygiene scan -f PATH -o OUTPUT` run: wall and CPU seconds, child peak RSS (MiB), phases."""
    command = [sys.executable, "-m", "access_hygiene.cli.main", "scan", "-f", str(path), "-o", output]
    env = {**os.environ, "ACCESS_HYGIENE_TIMINGS": "1"}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        errors = stderr.read().decode()
    if process.returncode not in (0, 1):
        raise SystemExit(f"scan failed ({process.returncode}): {errors}")
    timings = next((json.loads(line)["timings"] for line in errors.splitlines() if line.startswith('{"timings"')), {})
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall": wall, "cpu": cpu, "rss": usage.ru_maxrss / 1024, "phases": timings.get("wall", {})}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "wall": statistics.median(r["wall"] for r in runs),
        "cpu": statistics.median(r["cpu"] for r in runs),
        "rss": statistics.median(r["rss"] for r in runs),
        "phases": {p: statistics.median(r["phases"].get(p, 0.0) for r in runs) for p in PHASES},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, nargs="+", default=[5_000, 20_000, 50_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per size and format (the median is shown)")
    parser.add_argument("--formats", nargs="+", choices=("yaml", "json"), default=["yaml", "json"])
    parser.add_argument("--output", choices=("json", "sarif", "table", "wide"), default="json")
    parser.add_argument("--keep", help="write the dumps to this directory (and keep them) instead of a temp dir")
    args = parser.parse_args()

    columns = f"{'objects':>8} {'input':>5} {'wall s':>7} {'CPU s':>7} {'RSS MiB':>8} "
    header = columns + " ".join(f"{p:>8}" for p in PHASES)
    print(f"access-hygiene scan -o {args.output}, subprocess; phases in wall seconds")
    print(header)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(args.keep or scratch)
        directory.mkdir(parents=True, exist_ok=True)
        for count in args.objects:
            objects = generate(count, args.seed)
            paths = write_inputs(objects, directory, count, args.formats)
            del objects
            for fmt, path in paths.items():
                result = median_run([run_cli(path, args.output) for _ in range(args.repeat)])
                phases = " ".join(f"{result['phases'][p]:>8.2f}" for p in PHASES)
                figures = f"{result['wall']:>7.2f} {result['cpu']:>7.2f} {result['rss']:>8.0f}"
                print(f"{count + 1:>8} {fmt:>5} {figures} {phases}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reference outputs of `access-hygiene scan` (JSON and SARIF, line numbers included) on the benchmark corpus
and on every fixture file, so a faster reader or rule walk can be checked against what the code printed before.

    PYTHONPATH=. python tests/unit/scan_reference.py   # rewrites fixtures/scan_reference.json.gz from the current code

The committed file was produced by the code before issue 16 (pure-Python double parse, one walk per rule);
test_scan_reference.py recomputes the same outputs with the current code and compares them.
"""

import contextlib
import gzip
import importlib.util
import io
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.pinned_clock import PINNED_NOW_FLAG

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
FIXTURES = HERE / "fixtures"
REFERENCE = FIXTURES / "scan_reference.json.gz"
CORPUS_OBJECTS = 1_500


def benchmark_module() -> Any:
    spec = importlib.util.spec_from_file_location("scan_benchmark", ROOT / "benchmarks" / "scan_benchmark.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_corpus(directory: Path) -> list[Path]:
    """The benchmark corpus at a reduced size, as multi-document YAML and as a `kind: List` JSON."""
    objects = benchmark_module().generate(CORPUS_OBJECTS, 1)
    yaml_path = directory / "corpus.yaml"
    yaml_path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    json_path = directory / "corpus.json"
    json_path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=4))
    return [yaml_path, json_path]


def fixture_files() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())


def _normalise(output: str, base: Path) -> Any:
    data = json.loads(output)
    if "runs" in data:
        data["runs"][0]["tool"]["driver"].pop("version")
    # Paths relative to the directory the inputs live in (tmp dirs differ between runs).
    return json.loads(json.dumps(data).replace(base.as_posix() + "/", ""))


def scan_outputs(path: Path, base: Path) -> dict[str, Any]:
    from access_hygiene.cli.main import main

    outputs: dict[str, Any] = {}
    for fmt in ("json", "sarif"):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["scan", "-f", str(path), "-o", fmt, "--now", PINNED_NOW_FLAG])
        outputs[fmt] = {"code": code, "output": _normalise(stdout.getvalue(), base) if code != 2 else None}
    return outputs


def capture(corpus_dir: Path) -> dict[str, Any]:
    """{relative input path: {"json": {...}, "sarif": {...}}} for the corpus and every fixture file."""
    results: dict[str, Any] = {}
    for path in write_corpus(corpus_dir):
        results[f"corpus/{path.name}"] = scan_outputs(path, corpus_dir)
    for path in fixture_files():
        results[path.relative_to(FIXTURES).as_posix()] = scan_outputs(path, FIXTURES)
    return results


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(ROOT / "operator"))
    with tempfile.TemporaryDirectory() as tmp:
        data = capture(Path(tmp))
    REFERENCE.write_bytes(gzip.compress(json.dumps(data, sort_keys=True).encode(), mtime=0))
    print(f"wrote {REFERENCE} ({len(data)} inputs)")

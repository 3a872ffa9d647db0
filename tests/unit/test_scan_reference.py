"""The scan prints what it printed before the single-pass reader and the single binding walk (issue 16):
JSON and SARIF (line numbers included) on the benchmark corpus (YAML and JSON List) and on every fixture."""

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.scan_reference import REFERENCE, capture

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    reference = json.loads(gzip.decompress(REFERENCE.read_bytes()))
    return reference, capture(Path(tmp_path_factory.mktemp("corpus")))


def test_same_inputs(outputs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    reference, current = outputs
    assert sorted(current) == sorted(reference)
    assert len(reference) > 100


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_outputs_unchanged(outputs: tuple[dict[str, Any], dict[str, Any]], fmt: str) -> None:
    reference, current = outputs
    changed = [name for name in reference if current[name][fmt] != reference[name][fmt]]
    assert changed == []
    corpus = current["corpus/corpus.yaml"][fmt]["output"]
    findings = corpus["findings"] if fmt == "json" else corpus["runs"][0]["results"]
    assert len(findings) > 500

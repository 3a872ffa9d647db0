"""Shared helpers for the rule tests: load a fixture snapshot, describe a finding compactly."""

from pathlib import Path

import yaml

from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.models.findings import Finding


def load(path: Path) -> ClusterSnapshot:
    return ClusterSnapshot.from_objects(yaml.safe_load_all(path.read_text()))


def describe(finding: Finding) -> str:
    obj = finding.object
    subject = str(finding.subject) if finding.subject else "-"
    return f"{obj.kind}/{obj.namespace}/{obj.name}|{subject}|{finding.severity.value}"

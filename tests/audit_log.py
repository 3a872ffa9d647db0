"""Reading kube-apiserver's audit log while it is being written (the cluster and node tiers count requests there)."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def audit_log_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of kube-apiserver's audit log, read while it appends to it: a last line without its newline is an
    event still being written (json.loads would fail on it), left for the next read."""
    with path.open("rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                return
            if line.strip():
                yield json.loads(line)

"""Checks on rendered manifests the API server would refuse, made before anything is written.

A policy either writes all of its objects or none: catching a bad label or selector here means the
API server never sees half a policy.
"""

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

MAX_GENERATED_OBJECTS = 8  # SA, Role, RoleBinding, ClusterRole, ClusterRoleBinding, NetworkPolicy (+ headroom)
_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: prefix must be a DNS subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _NAME.match(name):
        return (
            f"label key {key!r}: name must be 1-63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def label_value_problem(key: str, value: Any) -> str | None:
    text = str(value)
    if len(text) > 63 or not _VALUE.match(text):
        return (
            f"label {key}={text[:80]!r}{'...' if len(text) > 80 else ''}: a label value must be at most 63 characters "
            "of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return None


def _label_maps(manifest: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    metadata = manifest.get("metadata") or {}
    yield "metadata.labels", metadata.get("labels") or {}
    spec = manifest.get("spec") or {}
    if not isinstance(spec, Mapping):
        return
    yield "spec.podSelector", (spec.get("podSelector") or {}).get("matchLabels") or {}
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            for j, peer in enumerate(rule.get(peers_key) or []):
                for selector in ("podSelector", "namespaceSelector"):
                    labels = (peer.get(selector) or {}).get("matchLabels") or {}
                    yield f"spec.{direction}[{i}].{peers_key}[{j}].{selector}", labels


def manifest_problems(manifests: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the API server would reject in these manifests, each naming the object and field."""
    problems: list[str] = []
    if len(manifests) > MAX_GENERATED_OBJECTS:
        problems.append(f"{len(manifests)} objects would be generated; at most {MAX_GENERATED_OBJECTS} are allowed")
    for manifest in manifests:
        what = f"{manifest.get('kind')} {(manifest.get('metadata') or {}).get('name')}"
        for where, labels in _label_maps(manifest):
            for key, value in labels.items():
                problem = label_key_problem(str(key)) or label_value_problem(str(key), value)
                if problem:
                    problems.append(f"{what} {where}: {problem}")
    return problems

"""plan_changes(desired, observed): what to apply, prune, or refuse, with no I/O.

An observed object is unchanged when every field of the desired manifest is present in it with an
equal value (desired is a subset of observed). That is what makes a no-op reconcile write nothing.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from access_hygiene.render.policy import POLICY_UID_LABEL

ADOPT_ANNOTATION = "accesshygiene.io/adopt"


@dataclass(frozen=True, order=True)
class ObjectKey:
    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of_manifest(cls, obj: Mapping[str, Any]) -> Self:
        meta = obj.get("metadata") or {}
        return cls(
            str(obj.get("apiVersion", "")),
            str(obj.get("kind", "")),
            str(meta.get("namespace") or ""),
            str(meta.get("name", "")),
        )

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


@dataclass(frozen=True)
class Conflict:
    key: ObjectKey
    reason: str


@dataclass(frozen=True)
class Plan:
    apply: list[dict[str, Any]] = field(default_factory=list)
    prune: list[ObjectKey] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    unchanged: list[ObjectKey] = field(default_factory=list)

    @property
    def is_noop(self) -> bool:
        return not (self.apply or self.prune or self.conflicts)


def is_owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    if not owner_uid:
        return False
    meta = obj.get("metadata") or {}
    if any(ref.get("uid") == owner_uid for ref in meta.get("ownerReferences") or []):
        return True
    return bool((meta.get("labels") or {}).get(POLICY_UID_LABEL) == owner_uid)


def is_adoptable(obj: Mapping[str, Any]) -> bool:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ADOPT_ANNOTATION, "")).lower() == "true"


def _owner_refs_subset(desired: Sequence[Any], observed: Sequence[Any]) -> bool:
    # Owner references are merged by uid under server-side apply; others may add theirs.
    by_uid = {ref.get("uid"): ref for ref in observed if isinstance(ref, Mapping)}
    return all(isinstance(ref, Mapping) and is_subset(ref, by_uid.get(ref.get("uid"), {})) for ref in desired)


def is_subset(desired: Any, observed: Any, path: str = "") -> bool:
    """Every field of desired is in observed with an equal value; lists compare exactly."""
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return False
        for key, value in desired.items():
            if key not in observed:
                return False
            if path == "metadata" and key == "ownerReferences":
                if not _owner_refs_subset(value, observed[key]):
                    return False
            elif not is_subset(value, observed[key], key if not path else f"{path}.{key}"):
                return False
        return True
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(desired) != len(observed):
            return False
        return all(is_subset(d, o, path) for d, o in zip(desired, observed, strict=True))
    return bool(desired == observed)


def plan_changes(desired: Sequence[Mapping[str, Any]], observed: Sequence[Mapping[str, Any]], owner_uid: str) -> Plan:
    live = {ObjectKey.of_manifest(obj): obj for obj in observed}
    plan = Plan()
    wanted: set[ObjectKey] = set()
    for manifest in desired:
        key = ObjectKey.of_manifest(manifest)
        wanted.add(key)
        current = live.get(key)
        if current is None:
            plan.apply.append(dict(manifest))
        elif not is_owned_by(current, owner_uid) and not is_adoptable(current):
            plan.conflicts.append(
                Conflict(
                    key,
                    f"exists and is not managed by this AccessPolicy; annotate it with "
                    f"{ADOPT_ANNOTATION}=true to let the operator adopt it",
                )
            )
        elif is_subset(manifest, current):
            plan.unchanged.append(key)
        else:
            plan.apply.append(dict(manifest))
    for key, obj in sorted(live.items()):
        if key not in wanted and is_owned_by(obj, owner_uid):
            plan.prune.append(key)
    return plan

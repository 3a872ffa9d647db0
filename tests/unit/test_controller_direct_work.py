"""Which AccessPolicy changes ask for the policy's reconcile (Controller._work_for): a new policy, a new generation,
a deletion, our finalizer removed; not the echo of our adding the finalizer (a second reconcile of every policy at
start-up), nor a status write or another finalizer's coming and going."""

from types import SimpleNamespace
from typing import Any

import pytest

from access_hygiene.k8s.controller import POLICY_FINALIZER, Controller
from access_hygiene.k8s.watch_cache import Change
from access_hygiene.settings import OperatorSettings

pytestmark = pytest.mark.unit

KEY = ("policy", "apps", "web")


def _policy(generation: int = 1, finalizers: list[str] | None = None, deleted: bool = False, **status: Any) -> Any:
    metadata: dict[str, Any] = {"name": "web", "namespace": "apps", "generation": generation}
    if finalizers is not None:
        metadata["finalizers"] = finalizers
    if deleted:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "accesshygiene.io/v1alpha1", "kind": "AccessPolicy", "metadata": metadata, "status": status}


def _work(old: Any, new: Any) -> set[tuple[str, ...]]:
    controller = SimpleNamespace(state=None, settings=OperatorSettings())
    return Controller._work_for(controller, Change("AccessPolicy", old, new))  # type: ignore[arg-type]


OURS, OTHER = [POLICY_FINALIZER], ["example.com/keep"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, _policy(), {KEY}),  # created
        (_policy(1), _policy(2), {KEY}),  # spec changed
        (_policy(finalizers=OURS), _policy(finalizers=OURS, deleted=True), {KEY}),  # deleted: finalize
        (_policy(finalizers=OURS), _policy(finalizers=[]), {KEY}),  # our finalizer removed: put it back
        (_policy(finalizers=[*OURS, *OTHER], deleted=True), _policy(finalizers=OTHER, deleted=True), {KEY}),
        (_policy(finalizers=[]), _policy(finalizers=OURS), set()),  # the echo of our adding it
        (_policy(finalizers=OURS), _policy(finalizers=[*OURS, *OTHER]), set()),  # another finalizer
        (_policy(finalizers=OURS), _policy(finalizers=OURS, ready="True"), set()),  # a status write
        (_policy(finalizers=OURS), None, set()),  # gone: nothing left to reconcile
    ],
)
def test_policy_changes_that_ask_for_a_reconcile(old: Any, new: Any, expected: set[tuple[str, ...]]) -> None:
    assert _work(old, new) == expected

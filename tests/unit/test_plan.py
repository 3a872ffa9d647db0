"""plan_changes: apply what differs, prune what we own and no longer want, never touch what we do not own."""

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access_hygiene.engine.planning.policy_plan import ADOPT_ANNOTATION, ObjectKey, is_subset, plan_changes
from access_hygiene.models.policy import AccessPolicySpec, resolve_policy
from access_hygiene.render.policy import ClusterFacts, render_policy

pytestmark = pytest.mark.unit
UID = "policy-uid"
META = {"name": "web", "namespace": "shop", "uid": UID}
SPEC = {"rbac": {"rules": [{"resources": ["pods"], "verbs": ["get"]}]}, "network": {"dns": True}}


def desired() -> list[dict[str, Any]]:
    return render_policy(resolve_policy(META, AccessPolicySpec.model_validate(SPEC)), ClusterFacts())


def as_live(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the API returns: our fields plus server-set metadata and defaults."""
    live = copy.deepcopy(manifest)
    live["metadata"].update(
        {
            "uid": "obj-uid",
            "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "access-hygiene"}],
        }
    )
    if live["kind"] == "ServiceAccount":
        live["secrets"] = []
    return live


def test_nothing_observed_applies_everything() -> None:
    plan = plan_changes(desired(), [], UID)
    assert [m["kind"] for m in plan.apply] == ["ServiceAccount", "Role", "RoleBinding", "NetworkPolicy"]
    assert not plan.prune
    assert not plan.conflicts


def test_live_objects_with_server_fields_are_a_noop() -> None:
    plan = plan_changes(desired(), [as_live(m) for m in desired()], UID)
    assert plan.is_noop
    assert len(plan.unchanged) == 4


def test_drifted_field_is_reapplied() -> None:
    live = [as_live(m) for m in desired()]
    live[0]["automountServiceAccountToken"] = False
    plan = plan_changes(desired(), live, UID)
    assert [m["kind"] for m in plan.apply] == ["ServiceAccount"]


def test_owned_objects_no_longer_desired_are_pruned() -> None:
    live = [as_live(m) for m in desired()]
    narrowed = [m for m in desired() if m["kind"] == "ServiceAccount"]
    plan = plan_changes(narrowed, live, UID)
    assert sorted(k.kind for k in plan.prune) == ["NetworkPolicy", "Role", "RoleBinding"]


def test_unowned_object_with_our_name_is_a_conflict_never_written_or_pruned() -> None:
    foreign = as_live(desired()[0])
    foreign["metadata"]["ownerReferences"] = []
    stray = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "shop"}}
    plan = plan_changes(desired(), [foreign, stray], UID)
    assert [c.key.kind for c in plan.conflicts] == ["ServiceAccount"]
    assert "ServiceAccount" not in [m["kind"] for m in plan.apply]
    assert plan.prune == []
    assert ADOPT_ANNOTATION in plan.conflicts[0].reason


def test_adopt_annotation_allows_taking_over() -> None:
    foreign = as_live(desired()[0])
    foreign["metadata"]["ownerReferences"] = []
    foreign["metadata"]["annotations"] = {ADOPT_ANNOTATION: "true"}
    plan = plan_changes(desired(), [foreign], UID)
    assert not plan.conflicts
    assert "ServiceAccount" in [m["kind"] for m in plan.apply]


def test_another_owner_reference_is_not_drift() -> None:
    live = [as_live(m) for m in desired()]
    live[0]["metadata"]["ownerReferences"].append({"apiVersion": "v1", "kind": "X", "name": "x", "uid": "other"})
    assert plan_changes(desired(), live, UID).is_noop


@pytest.mark.parametrize(
    ("want", "have", "subset"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": [1, 2]}, {"a": [1, 2, 3]}, False),
        ({"a": {"b": 1}}, {"a": {"b": 2}}, False),
        ({"a": None}, {}, False),
        ({"a": [{"x": 1}]}, {"a": [{"x": 1, "y": 2}]}, True),
    ],
)
def test_is_subset(want: Any, have: Any, subset: bool) -> None:
    assert is_subset(want, have) is subset


names = st.sampled_from(["a", "b", "c", "d"])
uids = st.sampled_from([UID, "someone-else", ""])


@settings(max_examples=150)
@given(
    wanted=st.lists(names, unique=True, max_size=4),
    live=st.lists(st.tuples(names, uids, st.booleans()), unique_by=lambda t: t[0], max_size=4),
)
def test_plan_never_applies_or_prunes_unowned_objects(wanted: list[str], live: list[tuple[str, str, bool]]) -> None:
    def obj(name: str, uid: str = "", adopt: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": "shop"}
        if uid:
            meta["ownerReferences"] = [{"uid": uid}]
        if adopt:
            meta["annotations"] = {ADOPT_ANNOTATION: "true"}
        return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}

    observed = [obj(n, u, a) for n, u, a in live]
    plan = plan_changes([obj(n, UID) for n in wanted], observed, UID)
    status = {n: (u, a) for n, u, a in live}
    for manifest in plan.apply:
        name = manifest["metadata"]["name"]
        assert name not in status or status[name][0] == UID or status[name][1]
    for key in plan.prune:
        assert status[key.name][0] == UID
        assert key.name not in wanted
    assert all(isinstance(k, ObjectKey) for k in plan.unchanged)

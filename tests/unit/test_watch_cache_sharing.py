"""The watch cache stores one shared copy of the parts objects repeat (issue 26, memory): what it stores must be,
item for item and type for type, what the API server sent (trimmed), whatever it shares."""

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access_hygiene.engine.ground.snapshot import trim_object
from access_hygiene.k8s.watch_cache import ClusterState, Reflector, SharedValues, WatchSpec, same_for_rules

pytestmark = pytest.mark.unit

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, -1.0, 2.5]),
    st.sampled_from(["", "a", "b", "1", "true", "x" * 70]),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c"]), children),
    max_leaves=12,
)


def _decoded(value: Any) -> Any:
    """A fresh copy, as a second watch event would deliver it (new strings, new containers)."""
    return json.loads(json.dumps(value))


def _exact(value: Any) -> str:
    """The value's JSON with each scalar's type: 1, 1.0 and true are told apart, and so is key order."""
    return json.dumps(value, default=str, sort_keys=False) + repr(_types(value))


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return [(key, _types(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value).__name__


@settings(max_examples=300, deadline=None)
@given(values=st.lists(VALUES, min_size=1, max_size=6))
def test_shared_values_are_exactly_the_values_they_stand_for(values: list[Any]) -> None:
    shared = SharedValues()
    results = [shared.value(_decoded(value)) for value in values]
    results += [shared.value(_decoded(value)) for value in values]  # the same content again: now shared
    for value, result in zip(values * 2, results, strict=True):
        assert _exact(result) == _exact(value)
        assert result == value


@settings(max_examples=200, deadline=None)
@given(values=st.lists(VALUES, min_size=2, max_size=8), limit=st.integers(1, 4))
def test_starting_over_past_the_limit_changes_no_value(values: list[Any], limit: int) -> None:
    shared = SharedValues(limit=limit)
    for value in values * 2:
        assert _exact(shared.value(_decoded(value))) == _exact(value)
        assert len(shared) <= limit


@settings(max_examples=100, deadline=None)
@given(values=st.lists(VALUES, min_size=2, max_size=8))
def test_containers_whose_hashes_collide_keep_their_own_content(values: list[Any]) -> None:
    from access_hygiene.k8s import watch_cache

    shared = SharedValues()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(watch_cache, "hash", lambda _: 0, raising=False)  # every container collides with the first
        for value in values * 2:
            assert _exact(shared.value(_decoded(value))) == _exact(value)


def test_scalars_equal_across_types_are_not_shared() -> None:
    shared = SharedValues()
    forms = [{"port": 1}, {"port": True}, {"port": 1.0}, {"port": "1"}, [1], [True], [1.0]]
    results = [shared.value(_decoded(form)) for form in forms]
    assert [_exact(result) for result in results] == [_exact(form) for form in forms]
    assert len({id(result) for result in results}) == len(forms)


def role_binding(name: str, subject: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": "shop", "uid": f"u-{name}", "resourceVersion": "7",
                     "labels": {"app.kubernetes.io/managed-by": "access-hygiene"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": subject, "namespace": "shop"}],
    }  # fmt: skip


def test_objects_share_repeated_parts_but_keep_their_own_top_level_and_metadata() -> None:
    shared = SharedValues()
    first, second = shared.object(_decoded(role_binding("a", "app"))), shared.object(_decoded(role_binding("b", "app")))
    assert first == role_binding("a", "app")
    assert second == role_binding("b", "app")
    assert first["roleRef"] is second["roleRef"]
    assert first["subjects"] is second["subjects"]
    assert first["metadata"]["labels"] is second["metadata"]["labels"]
    assert first["metadata"] is not second["metadata"]
    third = shared.object(_decoded(role_binding("a", "app")))
    assert third is not first  # each object its own top level and metadata, even when equal
    assert third["metadata"] is not first["metadata"]
    assert shared.object(_decoded(role_binding("c", "other")))["subjects"] is not first["subjects"]


def test_the_reflector_stores_the_trimmed_object_and_status_churn_is_still_dropped() -> None:
    state = ClusterState([WatchSpec("v1", "Pod")])
    reflector = Reflector(None, WatchSpec("v1", "Pod"), state)  # type: ignore[arg-type]  # never started

    def pod(version: str, message: str) -> dict[str, Any]:
        return {
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "p-1", "resourceVersion": version,
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"serviceAccountName": "web", "containers": [{"name": "c", "image": "nginx", "ports": []}],
                     "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "message": message}]},
        }  # fmt: skip

    state.replace("Pod", [reflector._prepare(pod("1", "waiting"))])
    stored = state.get("Pod", "shop", "web-1")
    expected = trim_object({**pod("1", "waiting"), "apiVersion": "v1", "kind": "Pod"})
    assert _exact(stored) == _exact(expected)
    update = reflector._prepare(pod("2", "still waiting"))
    assert same_for_rules(stored, update)  # type: ignore[arg-type]
    assert update["spec"] is stored["spec"]  # type: ignore[index]  # the unchanged part is the stored one
    state.upsert("Pod", update)
    assert state.unchanged_updates == 1


def test_an_objects_uid_and_resource_version_are_not_interned() -> None:
    binding = role_binding("a", "app")
    binding["metadata"]["resourceVersion"] = "123456"
    obj = SharedValues().object(_decoded(binding))
    assert obj == binding
    assert obj["metadata"]["uid"] is not sys.intern("u-a")  # (each object has its own: sharing would gain nothing)
    assert obj["metadata"]["resourceVersion"] is not sys.intern("123456")
    assert obj["metadata"]["name"] is sys.intern("a")

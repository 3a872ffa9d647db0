"""The controller's work queue (deduplication, re-run of a key queued while worked on, waiting for keys) and the
watch cache's shared strings."""

import asyncio
import json
from typing import Any

import pytest

from access_hygiene.k8s.controller import WorkQueue

pytestmark = pytest.mark.unit


def test_a_key_queued_twice_runs_once_and_once_more_if_queued_while_worked_on() -> None:
    async def scenario() -> list[str]:
        queue = WorkQueue()
        queue.add("a")
        queue.add("a")
        assert len(queue) == 1
        key = await queue.get()
        queue.add("a")  # changed again while being worked on: must run again afterwards
        assert queue.empty()  # ...but not concurrently
        queue.done(key)
        again = await asyncio.wait_for(queue.get(), timeout=1)
        queue.done(again)
        return [str(key), str(again)]

    assert asyncio.run(scenario()) == ["a", "a"]


def test_urgent_keys_are_taken_before_the_backlog_and_each_key_once() -> None:
    async def scenario() -> list[str]:
        queue = WorkQueue()
        for key in ("backlog-1", "backlog-2", "edited"):
            queue.add(key)
        queue.add("fresh", urgent=True)
        queue.add("edited", urgent=True)  # already queued behind the backlog: promoted, not run twice
        taken = []
        while not queue.empty():
            key = await asyncio.wait_for(queue.get(), timeout=1)
            taken.append(str(key))
            queue.done(key)
        return taken

    assert asyncio.run(scenario()) == ["fresh", "edited", "backlog-1", "backlog-2"]


def test_an_urgent_key_queued_while_worked_on_runs_again_before_the_backlog() -> None:
    async def scenario() -> list[str]:
        queue = WorkQueue()
        queue.add("policy")
        key = await queue.get()
        queue.add("backlog")
        queue.add("policy", urgent=True)
        queue.done(key)
        first = await asyncio.wait_for(queue.get(), timeout=1)
        queue.done(first)
        second = await asyncio.wait_for(queue.get(), timeout=1)
        queue.done(second)
        return [str(first), str(second), str(queue.empty())]

    assert asyncio.run(scenario()) == ["policy", "backlog", "True"]


def test_wait_settled_returns_once_the_keys_are_done_and_not_before() -> None:
    async def scenario() -> tuple[bool, bool]:
        queue = WorkQueue()
        queue.add("policy")
        queue.add("other")
        waiter = asyncio.create_task(queue.wait_settled(["policy"]))
        key = await queue.get()
        await asyncio.sleep(0.01)
        waiting_while_processing = not waiter.done()
        queue.done(key)  # "other" is still queued: it does not matter
        await asyncio.wait_for(waiter, timeout=1)
        return waiting_while_processing, waiter.done()

    assert asyncio.run(scenario()) == (True, True)


def test_cached_objects_share_their_short_strings_and_stay_equal() -> None:
    from access_hygiene.k8s.watch_cache import SharedValues

    def decoded(name: str) -> dict[str, Any]:  # as two separate watch events would deliver them
        note = "y" * 100
        return json.loads(
            f'{{"kind": "RoleBinding", "metadata": {{"namespace": "shop", "annotations": {{"note": "{note}"}}}},'
            f' "subjects": [{{"kind": "ServiceAccount", "name": "{name}"}}]}}'
        )  # type: ignore[no-any-return]

    first, second = decoded("app"), decoded("app")
    assert first["metadata"]["namespace"] is not second["metadata"]["namespace"]
    shared = SharedValues()
    shared_first, shared_second = shared.object(first), shared.object(second)
    assert shared_first == first
    assert shared_second == second
    assert shared_first["metadata"]["namespace"] is shared_second["metadata"]["namespace"]
    assert shared_first["subjects"][0]["name"] is shared_second["subjects"][0]["name"]
    assert shared_first["metadata"]["annotations"] is shared_second["metadata"]["annotations"]  # same content
    third = json.loads(json.dumps({**first, "metadata": {"annotations": {"note": "y" * 100, "other": "z"}}}))
    long_third = shared.object(third)["metadata"]["annotations"]["note"]
    assert long_third is not shared_first["metadata"]["annotations"]["note"]  # long strings are not interned


def test_admission_parameters_are_recomputed_only_on_relevant_changes() -> None:
    from access_hygiene.k8s.controller import admission_relevant
    from access_hygiene.k8s.watch_cache import Change

    def obj(kind: str, name: str, **metadata: Any) -> dict[str, Any]:
        return {"kind": kind, "metadata": {"name": name, "namespace": "shop", **metadata}}

    exempt = {"annotations": {"accesshygiene.io/exempt-until": "2026-01-01"}}
    owned = {"ownerReferences": [{"kind": "Deployment", "name": "web"}]}
    keys = frozenset({"Deployment.shop.web"})
    ceiling = "access-hygiene-grant-ceiling"

    def relevant(change: Change) -> bool:
        return admission_relevant([change], keys, ceiling)

    assert relevant(Change("ServiceAccount", None, obj("ServiceAccount", "a", **exempt)))  # the floor may move
    assert relevant(Change("ServiceAccount", obj("ServiceAccount", "a", **exempt), obj("ServiceAccount", "a")))
    assert relevant(Change("ReplicaSet", None, obj("ReplicaSet", "web-1", **owned)))  # an owner-exemption entry
    assert relevant(Change("ClusterRole", None, {"kind": "ClusterRole", "metadata": {"name": ceiling}}))
    # what cannot change them: an idle cluster's churn
    assert not relevant(Change("Pod", None, obj("Pod", "web-1-x", **owned)))  # pods own nothing
    assert not relevant(Change("ReplicaSet", None, obj("ReplicaSet", "api-1", ownerReferences=[
        {"kind": "Deployment", "name": "api"}])))  # fmt: skip
    assert not relevant(Change("ClusterRole", None, {"kind": "ClusterRole", "metadata": {"name": "view"}}))
    assert not relevant(Change("ConfigMap", obj("ConfigMap", "c"), obj("ConfigMap", "c", labels={"a": "b"})))

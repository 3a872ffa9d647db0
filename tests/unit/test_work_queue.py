"""The controller's work queue: deduplication, re-run of a key queued while worked on, waiting for keys."""

import asyncio

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
        assert queue._queue.empty()  # ...but not concurrently
        queue.done(key)
        again = await asyncio.wait_for(queue.get(), timeout=1)
        queue.done(again)
        return [str(key), str(again)]

    assert asyncio.run(scenario()) == ["a", "a"]


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

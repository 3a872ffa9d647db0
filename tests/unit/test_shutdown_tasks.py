"""Shutdown stops the pause-waiter tasks of watch streams kopf left open (kopf would wait 5 s for them), and only
those: tests/cluster/test_clean_stop.py holds the SIGTERM-under-a-burst case on the real control plane."""

import asyncio

import pytest

from access_hygiene.handlers.lifecycle import KOPF_PAUSE_WAITER, stop_abandoned_pause_waiters

pytestmark = pytest.mark.unit


def test_pending_pause_waiters_are_cancelled_and_nothing_else() -> None:
    async def scenario() -> tuple[int, bool, bool]:
        forever = asyncio.Event()
        waiter = asyncio.create_task(forever.wait(), name=f"{KOPF_PAUSE_WAITER}accesspolicies.v1alpha1.example")
        other = asyncio.create_task(forever.wait(), name="access-hygiene-worker-0")
        await asyncio.sleep(0)
        stopped = await stop_abandoned_pause_waiters()
        result = (stopped, waiter.cancelled(), other.done())
        other.cancel()
        await asyncio.gather(other, return_exceptions=True)
        return result

    assert asyncio.run(scenario()) == (1, True, False)


def test_nothing_to_stop_is_zero() -> None:
    assert asyncio.run(stop_abandoned_pause_waiters()) == 0

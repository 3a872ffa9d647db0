"""The coordinator's wait for work ends on its event, on its timeout, and on cancellation, including a cancellation
that lands in the same loop turn as the event (asyncio.wait_for drops that one on Python 3.11, which hung SIGTERM
of `access-hygiene run` during a burst of events: tests/cluster/test_clean_stop.py)."""

import asyncio
import contextlib

import pytest

from access_hygiene.k8s.controller import wake_or_timeout

pytestmark = pytest.mark.unit


async def coordinator_like(wake: asyncio.Event, rounds: list[int]) -> None:
    """The shape of Controller._coordinate: wait, clear, work, wait again (an hour when idle)."""
    while True:
        await wake_or_timeout(wake, 3600.0)
        wake.clear()
        rounds.append(1)


def test_a_cancellation_in_the_same_turn_as_the_wake_ends_the_loop() -> None:
    async def scenario() -> tuple[bool, int]:
        wake, rounds = asyncio.Event(), list[int]()
        task = asyncio.create_task(coordinator_like(wake, rounds))
        await asyncio.sleep(0)  # the task waits on the event
        wake.set()
        task.cancel()  # SIGTERM's stop() while an event is arriving
        done, _ = await asyncio.wait({task}, timeout=5.0)
        if not done:  # the cancellation was dropped: stop the task so the loop can close, and say so below
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return bool(done) and task.cancelled(), len(rounds)

    assert asyncio.run(scenario()) == (True, 0)


def test_the_wait_ends_when_woken_and_after_its_timeout() -> None:
    async def scenario() -> tuple[bool, bool]:
        wake = asyncio.Event()
        timed_out = asyncio.create_task(wake_or_timeout(wake, 0.01))
        await asyncio.wait({timed_out}, timeout=5.0)
        woken = asyncio.create_task(wake_or_timeout(wake, 3600.0))
        await asyncio.sleep(0)
        wake.set()
        await asyncio.wait({woken}, timeout=5.0)
        return timed_out.done() and timed_out.exception() is None, woken.done() and woken.exception() is None

    assert asyncio.run(scenario()) == (True, True)

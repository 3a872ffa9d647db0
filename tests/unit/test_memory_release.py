"""Freed memory goes back to the OS after a burst (issue 26, memory): malloc_trim where glibc has it, called by the
controller once its work queue drains after re-audits, not per event."""

import asyncio
import ctypes.util
import time
from types import SimpleNamespace

import pytest

from access_hygiene.k8s import controller as controller_module
from access_hygiene.k8s.controller import RELEASE_MEMORY_SECONDS, Controller, WorkQueue
from access_hygiene.k8s.memory import release_free_memory

pytestmark = pytest.mark.unit


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL(ctypes.util.find_library("c") or None), "malloc_trim")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc(), reason="the C library has no malloc_trim")
def test_freed_blocks_are_given_back() -> None:
    blocks = [bytes(2000) + bytes([i % 256]) for i in range(10_000)]  # over 512 bytes: glibc's malloc, not Python's
    del blocks[: len(blocks) - 1]  # all but the last: the heap cannot simply shrink from its top
    assert release_free_memory() is True


def _coordinator(reaudits: int, released: tuple[int, float], queued: int) -> SimpleNamespace:
    async def make_queue() -> WorkQueue:
        return WorkQueue()  # (its Events want a running loop)

    queue = asyncio.run(make_queue())
    for number in range(queued):
        queue.add(("namespace", f"ns-{number}"))
    return SimpleNamespace(_reaudits=reaudits, _released=released, queue=queue)


@pytest.mark.parametrize(
    ("reaudits", "since", "queued", "released"),
    [
        (5, RELEASE_MEMORY_SECONDS + 1, 0, True),  # re-audits since, queue drained, long enough ago
        (2, RELEASE_MEMORY_SECONDS + 1, 0, False),  # no re-audit since the last release
        (5, RELEASE_MEMORY_SECONDS + 1, 3, False),  # still work queued
        (5, 1.0, 0, False),  # released a second ago
    ],
)
def test_the_controller_releases_memory_once_the_queue_drains_after_re_audits(
    monkeypatch: pytest.MonkeyPatch, reaudits: int, since: float, queued: int, released: bool
) -> None:
    calls: list[None] = []
    monkeypatch.setattr(controller_module, "release_free_memory", lambda: calls.append(None) or True)
    state = _coordinator(reaudits, (2, time.monotonic() - since), queued)
    asyncio.run(Controller._release_memory(state))  # type: ignore[arg-type]
    assert bool(calls) is released
    if released:
        assert state._released[0] == reaudits  # the next release waits for new re-audits
        asyncio.run(Controller._release_memory(state))  # type: ignore[arg-type]
        assert len(calls) == 1

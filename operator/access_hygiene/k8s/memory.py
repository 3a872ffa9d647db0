"""Giving freed memory back to the OS after a burst (issue 26, memory).

The C allocator (glibc's malloc, under Python's own for blocks over 512 bytes) keeps what a burst freed for later
use: the LIST pages and the first audit's intermediates at start, the responses of the start-up writes. Python never
asks for it back; malloc_trim(0) does (free pages are returned, nothing in use moves). On the realistic population
at full scale: 6 MiB in-process (benchmarks/memory_benchmark.py), 15 MiB live once the operator has been quiet for
a while (docs/performance.md, "Memory on the realistic population").
"""

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    function: Callable[[int], int] = trim
    return function


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the C allocator's free pages to the OS. True when some were returned (False too where it cannot).
    Takes milliseconds: call it after a burst, not per event."""
    if _TRIM is None:
        return False
    return bool(_TRIM(0))

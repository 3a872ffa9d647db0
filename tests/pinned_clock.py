"""The instant unit and contract tests judge time-dependent rules at, whatever the day they run.

A test that needs "now" takes it from here (or a FixedClock of its own); none reads the system clock, and
`make test-future-clock` runs the suite with the system clock three years ahead to catch the next one that does.
"""

from datetime import UTC, datetime

from access_hygiene.clock import FixedClock

# The fixtures (exemptions, token ages, expiries) are written for this instant.
PINNED_NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)
PINNED_NOW_FLAG = "2030-06-15T12:00:00Z"  # the CLI's --now for the same instant


def pinned_clock() -> FixedClock:
    return FixedClock(PINNED_NOW)

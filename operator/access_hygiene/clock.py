"""The one source of "now", and how ages read.

Every caller that needs the current time takes a Clock (the operator builds one at start, the CLI from
`--now`, tests pin a FixedClock), so no result depends on the day it is computed unless the caller says so.
Pure code below this never reads the system clock: it receives `now` as a value.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


@dataclass(frozen=True)
class SystemClock:
    """The machine's clock: what the operator and the CLI use unless told otherwise."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class FixedClock:
    """A clock that stands still until moved: tests, and `--now` for reproducible scans."""

    at: datetime

    def __post_init__(self) -> None:
        self.at = aware(self.at)

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


SYSTEM_CLOCK = SystemClock()


def aware(moment: datetime) -> datetime:
    """A naive datetime is taken as UTC (Kubernetes timestamps are UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_instant(text: str) -> datetime:
    """An RFC 3339 time (2026-11-25T10:00:00Z, or with an offset) or a date (2026-11-25, midnight UTC).
    Raises ValueError with a message that names the accepted forms."""
    value = text.strip()
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use RFC 3339 (2026-11-25T10:00:00Z) or a date (2026-11-25)"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone: add Z or an offset such as +02:00")
    return parsed.astimezone(UTC)


def describe_age(what: str, since: datetime | date | None, now: datetime) -> str:
    """How long ago something happened, in calendar days (UTC), for people: "created 12 days ago". A time after
    `now` is not an age: it is said plainly (clock skew, or a fabricated timestamp), never as a negative number."""
    if since is None:
        return "age unknown"
    moment = aware(now)
    if isinstance(since, datetime):
        if aware(since) > moment:
            return f"{what} {aware(since).isoformat()}, a time in the future (clock skew?)"
        since = aware(since).astimezone(UTC).date()
    elif since > moment.astimezone(UTC).date():
        return f"{what} {since.isoformat()}, a day in the future (clock skew?)"
    days = (moment.astimezone(UTC).date() - since).days
    if days == 0:
        return f"{what} today"
    return f"{what} {days} day{'s' if days != 1 else ''} ago"

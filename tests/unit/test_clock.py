"""The one clock and how ages read: no negative age, ever; --now pins the CLI."""

import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from access_hygiene.cli.main import main
from access_hygiene.clock import SYSTEM_CLOCK, FixedClock, describe_age, parse_instant

pytestmark = pytest.mark.unit

NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (datetime(2030, 6, 15, 1, 0, tzinfo=UTC), "created today"),
        (datetime(2030, 6, 14, 23, 0, tzinfo=UTC), "created 1 day ago"),
        (datetime(2029, 6, 15, 8, 0, tzinfo=UTC), "created 365 days ago"),
        (datetime(2029, 6, 15, 8, 0), "created 365 days ago"),  # naive: taken as UTC
        (date(2030, 6, 10), "created 5 days ago"),
        (date(2030, 6, 15), "created today"),
        (None, "age unknown"),
        (datetime(2030, 6, 15, 12, 0, 1, tzinfo=UTC),
         "created 2030-06-15T12:00:01+00:00, a time in the future (clock skew?)"),
        (date(2030, 6, 16), "created 2030-06-16, a day in the future (clock skew?)"),
    ],
)  # fmt: skip
def test_describe_age(since: datetime | date | None, expected: str) -> None:
    assert describe_age("created", since, NOW) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-06-15", datetime(2030, 6, 15, tzinfo=UTC)),
        ("2030-06-15T12:00:00Z", NOW),
        ("2030-06-15T14:00:00+02:00", NOW),
    ],
)
def test_parse_instant(text: str, expected: datetime) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize(("text", "message"), [("tomorrow", "is not a time"), ("2030-06-15T12:00:00", "no timezone")])
def test_parse_instant_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_instant(text)


def test_fixed_clock_stands_still_until_moved() -> None:
    clock = FixedClock(datetime(2030, 6, 15, 12, 0))
    assert clock.now() == NOW
    clock.advance(90)
    assert clock.now() == datetime(2030, 6, 15, 12, 1, 30, tzinfo=UTC)
    assert SYSTEM_CLOCK.now().tzinfo is not None


NEGATIVE_SPAN = re.compile(r"-\d+\s*(?:days?|hours?|minutes?|seconds?|[dhms]\b)|-\d+ \w+ ago", re.IGNORECASE)


@pytest.mark.parametrize("fmt", ["table", "wide", "json", "sarif", "openreports"])
@pytest.mark.parametrize("now", ["2000-01-01", "2030-06-15T12:00:00Z", "2099-12-31"])
def test_no_negative_age_in_any_output_format(capsys: pytest.CaptureFixture[str], fmt: str, now: str) -> None:
    """The whole fixture corpus, judged long before, at, and long after the fixtures' own timestamps."""
    code = main(["scan", "-f", str(FIXTURES / "hygiene"), "-f", str(FIXTURES / "rbac"), "-o", fmt, "--now", now])
    out = capsys.readouterr().out
    assert code == 0
    assert "ServiceAccount" in out  # the corpus was read and reported
    assert NEGATIVE_SPAN.findall(out) == []
    if now == "2000-01-01":
        assert "in the future (clock skew?)" in re.sub(r"\s+", " ", out)


def test_now_flag_changes_what_expired(capsys: pytest.CaptureFixture[str]) -> None:
    """--now is the scan's clock: an exemption valid through 2030-06-14 is active on that day, expired after."""
    fixture = str(FIXTURES / "hygiene" / "AH-GOV-002" / "bad.yaml")
    main(["scan", "-f", fixture, "-o", "json", "--now", "2030-06-14T23:00:00Z"])
    before = {f["rule_id"] for f in json.loads(capsys.readouterr().out)["findings"]}
    main(["scan", "-f", fixture, "-o", "json", "--now", "2030-06-15T12:00:00Z"])
    after = {f["rule_id"] for f in json.loads(capsys.readouterr().out)["findings"]}
    assert "AH-GOV-002" not in before
    assert "AH-GOV-002" in after


def test_now_flag_rejects_a_time_without_zone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["scan", "-f", str(FIXTURES / "hygiene"), "--now", "2030-06-15T12:00:00"])
    assert "no timezone" in capsys.readouterr().err

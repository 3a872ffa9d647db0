"""Reading audit logs for `suggest` and `unused`: files (plain or gzip, detected by content), or `-` for stdin.

Streams line by line into a UsageData, so memory stays flat whatever the log size. Nothing is silently
dropped: every line that could not be used for a reason other than the normal ones (other stages, blank
lines) is counted per reason with its first line numbers, a truncated or corrupt gzip stream is reported
with the last line read, and the caller prints the report and exits non-zero when the input was partial. The
half-written last line of a live log (no newline yet, not JSON yet) is a normal skip, and reading stops there.
"""

import argparse
import gzip
import io
import re
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from access_hygiene.engine.usage.aggregation import UsageData
from access_hygiene.engine.usage.auditlog import LineError, parse_line, parse_timestamp

GZIP_MAGIC = b"\x1f\x8b"
MAX_LINE_NUMBERS = 10
# A Metadata-level event is ~1 KB; a line this long is not one, and is skipped without being held in memory.
MAX_LINE_BYTES = 1 << 20
# A last line without its newline that is not JSON yet: a live log's event being written, not damage.
INCOMPLETE_LAST_LINE = "incomplete-last-line"
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class AuditInputError(Exception):
    """No usable input at all (unreadable file, bad flag value)."""


@dataclass
class SourceProblems:
    """Lines of one source that were not used, per reason, with the first line numbers."""

    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    stream_error: str = ""  # truncated/corrupt gzip, read error: the rest of the source was not read

    def add(self, reason: str, line: int, detail: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        numbers = self.lines.setdefault(reason, [])
        if len(numbers) < MAX_LINE_NUMBERS:
            numbers.append(line)
        self.details.setdefault(reason, detail)


@dataclass
class InputReport:
    sources: list[str] = field(default_factory=list)
    lines: int = 0
    events: int = 0  # lines that were audit events of a counted stage
    skipped: dict[str, int] = field(default_factory=dict)  # normal skips: other stages, blank lines, no user
    problems: dict[str, SourceProblems] = field(default_factory=dict)  # source -> problems

    @property
    def partial(self) -> bool:
        return any(p.counts or p.stream_error for p in self.problems.values())

    def problem_lines(self) -> list[str]:
        """Human-readable lines naming every problem, for stderr."""
        out: list[str] = []
        for source, problems in self.problems.items():
            for reason, count in sorted(problems.counts.items()):
                numbers = ", ".join(str(n) for n in problems.lines[reason])
                more = ", ..." if count > len(problems.lines[reason]) else ""
                out.append(f"{source}: {count} line(s) {reason} (line {numbers}{more}): {problems.details[reason]}")
            if problems.stream_error:
                out.append(f"{source}: {problems.stream_error}")
        return out

    def to_wire(self) -> dict[str, object]:
        return {
            "sources": self.sources,
            "lines": self.lines,
            "events": self.events,
            "skipped": dict(sorted(self.skipped.items())),
            "partial": self.partial,
            "problems": self.problem_lines(),
        }


def _open(path: str, stack: list[IO[bytes]]) -> IO[bytes]:
    """The source as a binary line stream; gzip is recognised by its magic bytes, not the file name."""
    raw: io.BufferedReader
    if path == "-":
        stdin: Any = sys.stdin.buffer
        raw = stdin if isinstance(stdin, io.BufferedReader) else io.BufferedReader(stdin)
    else:
        try:
            raw = Path(path).open("rb")  # noqa: SIM115 - closed by the caller through `stack`
        except OSError as error:
            raise AuditInputError(f"{path}: cannot read: {error.strerror or error}") from None
        stack.append(raw)
    if raw.peek(2)[:2] == GZIP_MAGIC:
        unzipped = io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), buffer_size=1 << 16)
        stack.append(unzipped)
        return unzipped
    return raw


def _lines(stream: IO[bytes], problems: SourceProblems) -> Iterator[tuple[int, bytes]]:
    """(line number, line) pairs; a line longer than MAX_LINE_BYTES is skipped in chunks (memory stays
    bounded) and reported; stream errors end the source and are recorded."""
    number = 0
    try:
        while True:
            line = stream.readline(MAX_LINE_BYTES)
            if not line:
                return
            number += 1
            if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = stream.readline(MAX_LINE_BYTES)
                problems.add("line-too-long", number, f"longer than {MAX_LINE_BYTES} bytes: not an audit event")
                continue
            yield number, line
    except EOFError:
        problems.stream_error = f"gzip stream truncated after line {number}: the rest of the file is missing"
    except (gzip.BadGzipFile, zlib.error) as error:
        problems.stream_error = f"corrupt gzip data after line {number}: {error}"
    except OSError as error:
        problems.stream_error = f"read error after line {number}: {error}"


def read_audit_logs(paths: list[str], usage: UsageData) -> InputReport:
    """Feed every line of every source into usage; returns what was read and what could not be used."""
    report = InputReport(sources=list(paths))
    if not paths:
        raise AuditInputError("no audit log given (pass files, or - for stdin)")
    if paths.count("-") > 1:
        raise AuditInputError("stdin (-) given more than once")
    for path in paths:
        source = "<stdin>" if path == "-" else path
        problems = report.problems.setdefault(source, SourceProblems())
        stack: list[IO[bytes]] = []
        try:
            stream = _open(path, stack)
            compressed = isinstance(getattr(stream, "raw", None), gzip.GzipFile)  # not appended to while read
            for number, line in _lines(stream, problems):
                report.lines += 1
                parsed = parse_line(line)
                if isinstance(parsed, LineError):
                    if parsed.reason == "malformed-json" and not line.endswith(b"\n") and not compressed:
                        # The tail of a log still being written (kube-apiserver appends as it goes): read up to
                        # it and no further, or its rest would come next as a second broken line.
                        report.skipped[INCOMPLETE_LAST_LINE] = report.skipped.get(INCOMPLETE_LAST_LINE, 0) + 1
                        break
                    if parsed.is_error:
                        problems.add(parsed.reason, number, parsed.detail)
                    else:
                        report.skipped[parsed.reason] = report.skipped.get(parsed.reason, 0) + 1
                    continue
                report.events += 1
                for request in parsed:
                    usage.add(request)
        finally:
            for opened in stack:
                opened.close()
    return report


def parse_time_flag(value: str, now: float | None = None) -> float:
    """--since/--until: an RFC 3339 time (2026-11-25T10:00:00Z), a date (2026-11-25, UTC), or a duration
    back from now (90m, 24h, 7d, 2w)."""
    text = value.strip()
    match = _DURATION.match(text)
    if match:
        reference = time.time() if now is None else now
        return reference - int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
        return parse_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a time: use RFC 3339 (2026-11-25T10:00:00Z), a date (2026-11-25) or a duration (24h, 7d)"
        ) from None


def parse_duration_flag(value: str) -> float:
    match = _DURATION.match(value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration: use e.g. 0s, 90m, 24h, 7d, 2w")
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "logs", nargs="+", metavar="AUDIT_LOG",
        help="audit log files (audit.k8s.io/v1 JSON lines, plain or gzip), or - for stdin",
    )  # fmt: skip
    parser.add_argument(
        "--since", type=parse_time_flag, metavar="TIME",
        help="only requests at or after TIME: RFC 3339, a date (UTC) or a duration back from now (24h, 7d)",
    )  # fmt: skip
    parser.add_argument("--until", type=parse_time_flag, metavar="TIME", help="only requests at or before TIME")

"""Stops the control plane's processes once the process that started them is gone, whatever killed it.

ControlPlane starts this script first, in a session of its own, with its stdin the read end of a pipe
whose only write end ControlPlane holds (close-on-exec, so the control plane binaries do not inherit
it). ControlPlane writes one line per process it starts: `ORDER PID STARTTIME NAME`. End of file on
stdin means ControlPlane closed the pipe (a clean stop: everything is down already) or its process
died (SIGKILL, a crash, an unhandled signal): the kernel closes the pipe either way. Then every
recorded process still alive is stopped in order (the API server and controllers first, etcd last):
SIGTERM, SIGKILL after the grace period. A PID is signalled only while its start time is the recorded
one, so a PID the kernel has reused is never touched.

Standard library only, run by path (`python watchdog.py LOG GRACE`): it must not need the package.
"""

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Watched:
    order: int
    pid: int
    start_time: str
    name: str


def process_start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); "" without /proc."""
    fields = _stat_fields(pid)
    return fields[19] if fields else ""


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: fields 3 (state) onwards; None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def alive(process: Watched) -> bool:
    """Running (not a zombie) and still the process that was recorded."""
    if not Path("/proc").is_dir():  # no procfs: the PID alone
        try:
            os.kill(process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = _stat_fields(process.pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return not process.start_time or fields[19] == process.start_time


def parse(line: str) -> Watched | None:
    parts = line.split(maxsplit=3)
    if len(parts) != 4 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return Watched(int(parts[0]), int(parts[1]), parts[2] if parts[2] != "-" else "", parts[3].strip())


def _signal(process: Watched, signum: int) -> None:
    if alive(process):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


def _wait_gone(processes: list[Watched], timeout: float) -> list[Watched]:
    deadline = time.monotonic() + timeout
    remaining = [p for p in processes if alive(p)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = [p for p in remaining if alive(p)]
    return remaining


def stop_in_order(processes: list[Watched], grace: float, log: "Log") -> None:
    """SIGTERM each group (lowest order first), SIGKILL what outlives the grace period, then the next group."""
    for order in sorted({p.order for p in processes}):
        group = [p for p in processes if p.order == order and alive(p)]
        if not group:
            continue
        log(f"Stopping {', '.join(f'{p.name} (pid {p.pid})' for p in group)}.")
        for process in group:
            _signal(process, signal.SIGTERM)
        stubborn = _wait_gone(group, grace)
        for process in stubborn:
            log(f"Killed {process.name} (pid {process.pid}): still running {grace:g}s after SIGTERM.")
            _signal(process, signal.SIGKILL)
        _wait_gone(stubborn, 5.0)


class Log:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __call__(self, message: str) -> None:
        if self.path is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        try:
            with self.path.open("a") as out:
                out.write(f"{stamp} watchdog: {message}\n")
        except OSError:
            pass


def main(argv: list[str]) -> int:
    # Terminal signals are for the process that started us; only our stdin's end of file stops us.
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    log = Log(Path(argv[1]) if len(argv) > 1 else None)
    grace = float(argv[2]) if len(argv) > 2 else 2.0
    parent = os.getppid()
    watched: list[Watched] = []
    for line in sys.stdin:
        process = parse(line)
        if process is not None:
            watched.append(process)
    left = [p for p in watched if alive(p)]
    if left:
        log(f"The process that started the control plane (pid {parent}) is gone; {len(left)} process(es) left.")
        stop_in_order(left, grace, log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

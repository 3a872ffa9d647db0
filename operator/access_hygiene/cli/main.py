"""Entry point of the `access-hygiene` command: one subcommand per module in cli/."""

import argparse
import os
import sys
from collections.abc import Sequence

from access_hygiene import __version__


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser; with `command`, only the module that registers that subcommand is imported
    (the parser then knows that subcommand only: argv names it)."""
    # Imported here so `access-hygiene --version` stays fast.
    from access_hygiene.cli import commands

    parser = argparse.ArgumentParser(
        prog="access-hygiene",
        description="Kubernetes access hygiene: operator, scanner and RBAC explorer.",
    )
    parser.add_argument("--version", action="version", version=f"access-hygiene {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in commands.registrars(command):
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # The subcommand is the first argument (the top-level options, --help and --version, come alone).
    command = arguments[0] if arguments and not arguments[0].startswith("-") else None
    parser = build_parser(command)
    args = parser.parse_args(arguments)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # The reader went away (`access-hygiene scan | head`); that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if argv is None and getattr(args, "exit_without_teardown", False):
        _exit_without_teardown(code)
    return code


def _exit_without_teardown(code: int) -> None:
    """End the process now, its output flushed: a command that built a large object graph (a 50,000-object
    scan) would otherwise spend ~0.3 s freeing it object by object at exit. Only for the command-line
    process itself (main() called without argv), never when main() is called from other code."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        return  # let the interpreter report it as it always did
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())

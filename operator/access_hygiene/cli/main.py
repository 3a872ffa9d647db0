"""Entry point of the `access-hygiene` command: one subcommand per module in cli/."""

import argparse
import os
import sys
from collections.abc import Sequence

from access_hygiene import __version__


def build_parser() -> argparse.ArgumentParser:
    # Imported here so `access-hygiene --version` stays fast.
    from access_hygiene.cli import commands

    parser = argparse.ArgumentParser(
        prog="access-hygiene",
        description="Kubernetes access hygiene: operator, scanner and RBAC explorer.",
    )
    parser.add_argument("--version", action="version", version=f"access-hygiene {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in commands.REGISTRARS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # The reader went away (`access-hygiene scan | head`); that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())

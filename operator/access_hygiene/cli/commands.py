"""The registry of subcommands. Each module exposes register(subparsers) and sets args.func."""

import argparse
from collections.abc import Callable
from typing import Any

from access_hygiene.cli import crd_cmd, local_cmd, rbac_query, run_cmd, scan, suggest_cmd, unused_cmd

Registrar = Callable[["argparse._SubParsersAction[Any]"], None]

REGISTRARS: list[Registrar] = [
    crd_cmd.register,
    run_cmd.register,
    local_cmd.register,
    scan.register,
    rbac_query.register,
    suggest_cmd.register,
    unused_cmd.register,
]

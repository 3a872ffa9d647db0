"""The registry of subcommands. Each module exposes register(subparsers) and sets args.func.

Modules are imported when their subcommands are registered: `access-hygiene scan` imports the scan module
only, not the CRD generator's models or the audit-log readers of the other subcommands (import time is part
of what a user waits for). COMMANDS names the subcommands each module registers; a unit test checks it
against what the modules really register.
"""

import argparse
import importlib
from collections.abc import Callable
from typing import Any

Registrar = Callable[["argparse._SubParsersAction[Any]"], None]

# Module (in access_hygiene.cli) -> the subcommands its register() adds, in the order of the help text.
COMMANDS: dict[str, tuple[str, ...]] = {
    "crd_cmd": ("crd",),
    "run_cmd": ("run",),
    "local_cmd": ("local",),
    "scan": ("scan", "rules"),
    "rbac_query": ("who-can", "explain"),
    "suggest_cmd": ("suggest",),
    "unused_cmd": ("unused",),
    "access_cmd": ("access",),
}


def registrars(command: str | None = None) -> list[Registrar]:
    """register() of every module, in order; only the module that registers `command` when one does."""
    modules = [module for module, names in COMMANDS.items() if command in names] or list(COMMANDS)
    return [importlib.import_module(f"access_hygiene.cli.{module}").register for module in modules]


def __getattr__(name: str) -> Any:
    if name == "REGISTRARS":  # every registrar (imports every subcommand module)
        return registrars()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

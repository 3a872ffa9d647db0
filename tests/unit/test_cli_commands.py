"""The subcommand registry imports only the module of the subcommand that runs, and names the subcommands
each module registers correctly; a file scan to JSON does not import what only other paths need."""

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from access_hygiene.cli import commands
from access_hygiene.cli.main import build_parser

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("module", sorted(commands.COMMANDS))
def test_commands_names_what_each_module_registers(module: str) -> None:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(f"access_hygiene.cli.{module}").register(subparsers)
    assert tuple(subparsers.choices) == commands.COMMANDS[module]


def test_one_command_or_all() -> None:
    assert [r.__module__ for r in commands.registrars("rules")] == ["access_hygiene.cli.scan"]
    assert len(commands.registrars(None)) == len(commands.registrars("no-such-command")) == len(commands.COMMANDS)
    assert commands.registrars() == commands.REGISTRARS
    every = [name for names in commands.COMMANDS.values() for name in names]
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(subparsers.choices) == every


def test_scan_to_json_imports_only_what_it_uses(tmp_path: Path) -> None:
    manifest = tmp_path / "sa.yaml"
    manifest.write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app, namespace: team}\n")
    probe = (
        "import sys, contextlib, io\n"
        "from access_hygiene.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['scan', '-f', {str(manifest)!r}, '-o', 'json'])\n"
        "print(sorted(sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    modules = set(json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')))
    unused = [
        "rich",
        "kubernetes",
        "kopf",
        "prometheus_client",
        "access_hygiene.models.crd",
        "access_hygiene.models.policy",
        "access_hygiene.engine.usage.aggregation",
        "access_hygiene.cli.suggest_cmd",
    ]
    assert [name for name in unused if name in modules] == []
    assert "access_hygiene.engine.catalogue.governance" in modules  # the rules themselves are loaded

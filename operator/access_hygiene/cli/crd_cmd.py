"""`access-hygiene crd`: print the AccessPolicy CRD generated from the models."""

import argparse
from typing import Any

from access_hygiene.models.crd import render_crd_yaml


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    parser = subparsers.add_parser("crd", help="print the AccessPolicy CustomResourceDefinition (YAML)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(render_crd_yaml(), end="")
    return 0

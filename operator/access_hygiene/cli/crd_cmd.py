"""`access-hygiene crd`: print a CRD generated from the models, or write all of them into a directory."""

import argparse
from pathlib import Path
from typing import Any

from access_hygiene.models.crd import KINDS, render_crd_yaml


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    parser = subparsers.add_parser(
        "crd", help="print the AccessPolicy CustomResourceDefinition (YAML), or write every CRD with --out-dir"
    )
    parser.add_argument("--kind", choices=[d.kind for d in KINDS], default="AccessPolicy", help="the CRD to print")
    parser.add_argument(
        "--out-dir", type=Path, metavar="DIR", help="write every CRD of the group to DIR/<plural>.<group>.yaml"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out_dir is not None:
        for definition in KINDS:
            (args.out_dir / definition.file_name).write_text(render_crd_yaml(definition))
            print(args.out_dir / definition.file_name)
        return 0
    print(render_crd_yaml(next(d for d in KINDS if d.kind == args.kind)), end="")
    return 0

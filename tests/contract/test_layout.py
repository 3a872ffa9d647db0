"""Guards on the repository's shape that other tools rely on."""

import tomllib
from pathlib import Path

import pytest

from access_hygiene.models.crd import KINDS, KindDefinition, render_crd_yaml

pytestmark = pytest.mark.contract
ROOT = Path(__file__).resolve().parents[2]


def test_operator_source_root_is_not_a_package() -> None:
    # operator/__init__.py would shadow the standard library's `operator` module.
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_package_and_console_command_names_are_fixed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"access-hygiene": "access_hygiene.cli.main:main"}
    assert (ROOT / "operator" / "access_hygiene" / "__init__.py").is_file()


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "operator", "crds", "deploy", "helm", "tests", "Dockerfile", "README.md", ".ci/run"],
)
def test_top_level_layout(path: str) -> None:
    assert (ROOT / path).exists(), f"{path} is part of the documented layout"


@pytest.mark.parametrize("definition", KINDS, ids=lambda d: d.plural)
def test_committed_crd_equals_generated(definition: KindDefinition) -> None:
    committed = (ROOT / "crds" / definition.file_name).read_text()
    assert committed == render_crd_yaml(definition), "run `make crd` and commit crds/"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    commands = [line.split("#")[0].strip() for line in readme[:6] if line.startswith("make ")]
    assert commands == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make test" in [line.strip() for line in ci]


def test_rbac_rule_reference_is_generated_from_the_registry() -> None:
    from access_hygiene.cli.output import render_rules_markdown
    from access_hygiene.engine.audit.runner import load_rules

    rules = [r for r in load_rules().values() if r.rule_id.startswith("AH-RBAC")]
    assert len(rules) == 29  # AH-RBAC-001..029
    committed = (ROOT / "docs" / "rbac-rules.md").read_text()
    assert committed == render_rules_markdown(rules), "run `access-hygiene rules --prefix AH-RBAC -o markdown`"

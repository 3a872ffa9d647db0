"""AH-RBAC-024 (latent roles) covers every capability rule of the catalogue (issue 25 item 17): an unbound role is
reported exactly for what its binding would be reported for, and a new AH-RBAC rule must either be a binding rule
(covered by construction) or say in latent.NOT_LATENT why a latent role is not judged by it."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from access_hygiene.engine.audit.runner import load_rules, run_audit
from access_hygiene.engine.catalogue.binding_walk import BINDING_RULES
from access_hygiene.engine.catalogue.latent_roles import NOT_LATENT, RULE_ID, lowered
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.rbac.permissions import is_bootstrap
from access_hygiene.models.findings import Finding
from tests.pinned_clock import PINNED_NOW
from tests.unit.rule_fixtures import describe

pytestmark = pytest.mark.unit

CATALOGUE = load_rules()  # imports every rule module, so BINDING_RULES is complete before parametrizing
FIXTURES = Path(__file__).parent / "fixtures" / "rbac"
RBAC = "rbac.authorization.k8s.io"
BINDING_KINDS = ("RoleBinding", "ClusterRoleBinding")
TRIGGERED = re.compile(r"(AH-RBAC-\d{3}): ")


def _rbac_rule_ids() -> list[str]:
    return [rule_id for rule_id in CATALOGUE if rule_id.startswith("AH-RBAC-")]


def test_every_rbac_rule_is_covered_by_latent_or_says_why() -> None:
    """Fails for a new AH-RBAC rule that is neither a binding rule (which AH-RBAC-024 covers by construction)
    nor listed in NOT_LATENT with the reason."""
    catalogue = set(_rbac_rule_ids())
    assert set(NOT_LATENT) <= catalogue
    assert not set(NOT_LATENT) & set(BINDING_RULES)
    assert catalogue == set(BINDING_RULES) | set(NOT_LATENT), sorted(catalogue - set(BINDING_RULES) - set(NOT_LATENT))


def _objects(rule_id: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((FIXTURES / rule_id / "bad.yaml").read_text()) if doc]


def _unbound(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] not in BINDING_KINDS]


@pytest.mark.parametrize("rule_id", sorted(BINDING_RULES))
def test_latent_covers_every_binding_rule(rule_id: str) -> None:
    """The roles of each binding rule's bad fixture, their bindings removed, are latent for that rule."""
    snapshot = ClusterSnapshot.from_objects(_unbound(_objects(rule_id)))
    findings = run_audit(snapshot, AuditContext(now=PINNED_NOW), only=[RULE_ID])
    triggered = {match for f in findings for match in TRIGGERED.findall(f.message)}
    assert rule_id in triggered, [f.message for f in findings]


def _roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Role", "ClusterRole") and not is_bootstrap(o)]


def _probe_binding(role: dict[str, Any]) -> dict[str, Any]:
    namespace = role["metadata"].get("namespace") if role["kind"] == "Role" else None
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding" if namespace else "ClusterRoleBinding",
        "metadata": {"name": "latent-probe", **({"namespace": namespace} if namespace else {})},
        "roleRef": {"apiGroup": RBAC, "kind": role["kind"], "name": role["metadata"]["name"]},
        "subjects": [{"kind": "User", "name": "latent-probe", "apiGroup": RBAC}],
    }


def _probe_findings(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.object.name == "latent-probe" and f.rule_id in BINDING_RULES]


SOURCES = sorted({*BINDING_RULES, RULE_ID})
assert len(SOURCES) > 20, "the binding rules are registered when the rule modules are imported"


@pytest.mark.parametrize("source", SOURCES)
def test_latent_finding_is_what_a_binding_would_get(source: str) -> None:
    """For every role of the bad fixtures: AH-RBAC-024 names exactly the binding rules that flag a binding of the
    role once it exists (bound cluster-wide or in its namespace), one severity step below the most severe."""
    objects = _unbound(_objects(source))
    ctx = AuditContext(now=PINNED_NOW)
    latent = {f.object.name: f for f in run_audit(ClusterSnapshot.from_objects(objects), ctx, only=[RULE_ID])}
    checked = 0
    for role in _roles(objects):
        name = role["metadata"]["name"]
        labels = role["metadata"].get("labels") or {}
        if any(key.startswith("example.com/aggregate-to-") for key in labels):
            continue  # an aggregated source is judged through the aggregating role
        bound = run_audit(ClusterSnapshot.from_objects([*objects, _probe_binding(role)]), AuditContext(now=PINNED_NOW))
        effective = _probe_findings(bound)
        expected_ids = sorted({f.rule_id for f in effective})
        finding = latent.get(name)
        actual_ids = sorted(set(TRIGGERED.findall(finding.message))) if finding else []
        assert actual_ids == expected_ids, f"{source} {role['kind']} {name}: latent={actual_ids} bound={expected_ids}"
        if finding is not None:
            assert finding.severity == lowered(max((f.severity for f in effective), key=lambda s: s.rank)), name
            assert [f for f in bound if f.rule_id == RULE_ID and f.object.name == name] == []  # bound: not latent
        checked += 1
    assert checked


def test_issue_case_workload_exec_port_forward_and_secrets_writes() -> None:
    """The issue's examples: a Role granting workload writes, exec, port-forward and secrets writes is latent."""
    objects = _objects(RULE_ID)
    findings = run_audit(ClusterSnapshot.from_objects(objects), AuditContext(now=PINNED_NOW), only=[RULE_ID])
    deployer = next(f for f in findings if f.object.name == "deployer")
    assert describe(deployer) == "Role/team/deployer|-|medium"
    assert deployer.message == (
        "Role deployer is not bound by any binding in the scan (latent: whoever binds it gets this); bound in "
        "namespace team, it would trigger AH-RBAC-013: can create pods/exec (run commands in pods); AH-RBAC-015: "
        "can create/patch deployments (pod-template control: runs pods); AH-RBAC-025: can update/delete secrets "
        "(replace or remove credentials other workloads mount); AH-RBAC-027: can port-forward to pods"
    )


def _id_ranges(rule_ids: list[str]) -> str:
    """The ids as "AH-RBAC-001, 005..015, 019..021" (sorted; runs of consecutive numbers as ranges)."""
    numbers = sorted(int(rule_id.rsplit("-", 1)[1]) for rule_id in rule_ids)
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    parts = [f"{run[0]:03d}" if len(run) == 1 else f"{run[0]:03d}..{run[-1]:03d}" for run in runs]
    return "AH-RBAC-" + ", ".join(parts)


def test_description_names_the_binding_rules() -> None:
    """The rule's description (docs/rbac-rules.md) lists the rules it covers; a new binding rule updates it."""
    assert f"({_id_ranges(sorted(BINDING_RULES))}:" in CATALOGUE[RULE_ID].description

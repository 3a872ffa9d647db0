"""Every shipped example is a valid AccessPolicy that renders and fits the default grant ceiling."""

from pathlib import Path

import pytest
import yaml

from access_hygiene.engine.rbac.grant_ceiling import check_grant_ceiling
from access_hygiene.models.policy import AccessPolicySpec, resolve_policy
from access_hygiene.render.grant_ceiling import DEFAULT_GRANT_CEILING_RULES
from access_hygiene.render.policy import ClusterFacts, render_policy

pytestmark = pytest.mark.unit
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_realistic_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_renders_and_fits_the_ceiling(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        assert document["apiVersion"] == "accesshygiene.io/v1alpha1"
        assert document["kind"] == "AccessPolicy"
        metadata = {**document["metadata"], "uid": "example-uid", "generation": 1}
        policy = resolve_policy(metadata, AccessPolicySpec.model_validate(document["spec"]))
        assert check_grant_ceiling(policy, DEFAULT_GRANT_CEILING_RULES) == []
        manifests = render_policy(policy, ClusterFacts(api_server_endpoints=(("10.0.0.1", 443),)))
        assert manifests[0]["kind"] == "ServiceAccount"

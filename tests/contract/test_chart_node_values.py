"""The chart rendered with the values `access-hygiene local --node` installs it with (localcluster/node_cluster.py):
the Deployment runs the local image without pulling it, and the operator's NetworkPolicy lets it reach the API
server only at the node's relay address and the control plane's port."""

from pathlib import Path

import pytest

from access_hygiene.localcluster.node import API_ADDRESS
from access_hygiene.localcluster.node_cluster import chart_dir, install_values
from tests.contract.chart import render

pytestmark = pytest.mark.contract


def test_local_image_never_pulled_and_api_server_egress_narrowed(helm: Path) -> None:
    assert chart_dir().name == "access-hygiene"
    documents = render(helm, *install_values("localhost/access-hygiene:0a1b2c", 41234))
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "localhost/access-hygiene:0a1b2c"
    assert container["imagePullPolicy"] == "Never"
    (policy,) = [d for d in documents if d["kind"] == "NetworkPolicy"]
    api_rules = [rule for rule in policy["spec"]["egress"] if any("ipBlock" in peer for peer in rule.get("to", []))]
    assert api_rules
    for rule in api_rules:
        assert [peer["ipBlock"]["cidr"] for peer in rule["to"]] == [f"{API_ADDRESS}/32"]
        assert [port["port"] for port in rule["ports"]] == [41234]

"""`access-hygiene local --node`: its options, the helm values it installs the chart with, and what it prints
(the chart rendered with those values: tests/contract/test_chart_node_values.py; the running path:
tests/node/test_local_node_cmd.py)."""

from pathlib import Path

import pytest

from access_hygiene.cli.local_cmd import node_conflicts, node_ready_lines
from access_hygiene.cli.main import build_parser
from access_hygiene.localcluster.node import API_ADDRESS
from access_hygiene.localcluster.node_cluster import install_values, metrics_url

pytestmark = pytest.mark.unit


def _parse(*argv: str) -> object:
    return build_parser("local").parse_args(["local", *argv])


def test_node_is_off_by_default_and_on_with_the_flag() -> None:
    assert _parse().node is False  # type: ignore[attr-defined]
    args = _parse("--node", "--duration", "60", "--examples", "examples")
    assert args.node is True  # type: ignore[attr-defined]
    assert args.duration == 60  # type: ignore[attr-defined]
    assert args.examples == [Path("examples")]  # type: ignore[attr-defined]
    assert node_conflicts(args) == []  # type: ignore[arg-type]


def test_options_of_the_in_process_operator_are_refused_with_node() -> None:
    args = _parse("--node", "--admission", "--audit-webhook", "--usage-min-window", "5")
    assert node_conflicts(args) == ["--audit-webhook", "--admission", "--usage-min-window"]  # type: ignore[arg-type]


def test_helm_values_use_the_local_image_never_pulled_and_narrow_the_api_server_egress() -> None:
    values = install_values("localhost/access-hygiene:0a1b2c", 41234)
    assert values[::2] == ["--set"] * 6
    assert values[1::2] == [
        "image.repository=localhost/access-hygiene",
        "image.tag=0a1b2c",
        "image.pullPolicy=Never",
        f"networkPolicy.apiServer.cidrs={{{API_ADDRESS}/32}}",
        "networkPolicy.apiServer.ports={41234}",
        "replicaCount=1",  # one node (docs/ha.md: the chart's default is 2)
    ]


class _Port:
    def __init__(self, name: str, container_port: int) -> None:
        self.name, self.container_port = name, container_port


class _Pod:
    def __init__(self) -> None:
        container = type("C", (), {"ports": [_Port("health", 8080), _Port("metrics", 9808)]})
        self.spec = type("S", (), {"containers": [container]})
        self.status = type("T", (), {"pod_ip": "10.244.0.7"})


def test_metrics_url_is_the_pod_ip_and_its_metrics_port() -> None:
    assert metrics_url(_Pod()) == "http://10.244.0.7:9808/metrics"


def test_printed_text_says_how_to_reach_metrics_and_how_it_stops() -> None:
    lines = node_ready_lines(
        "access-hygiene/access-hygiene-6d5f-x",
        "http://10.244.0.7:9808/metrics",
        {"helm install -> operator Pod Ready": 6.04},
    )
    assert lines[0].startswith("Operator running in Pod access-hygiene/access-hygiene-6d5f-x ")
    assert "helm install -> operator Pod Ready 6.0s" in lines[0]
    assert "  curl -s http://10.244.0.7:9808/metrics | grep access_hygiene_" in lines
    assert any("Ctrl-C" in line and "helm uninstall" in line for line in lines)

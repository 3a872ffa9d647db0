"""`access-hygiene access`: the manifests it sends for the caller, kubectl's duration form and table, -o output.
Against a live cluster, as two users: tests/cluster/test_access_admission.py."""

import json
from datetime import timedelta

import pytest
import yaml

from access_hygiene.cli.access_cmd import (
    approval_manifest,
    human_duration,
    list_output,
    object_output,
    request_manifest,
)
from access_hygiene.cli.main import build_parser
from access_hygiene.models.access import AccessApprovalSpec, AccessRequestSpec
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (330, "5m30s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (7 * 3600 + 60 * 25, "7h25m"),
        (8 * 3600 + 60 * 25, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (12 * 86400 + 3600, "12d"),
    ],
)
def test_human_duration_is_kubectls(seconds: int, shown: str) -> None:
    """apimachinery's HumanDuration, which kubectl's AGE column uses, at each of its boundaries."""
    assert human_duration(timedelta(seconds=seconds)) == shown


def test_request_manifest_is_a_valid_request_for_the_caller() -> None:
    manifest = request_manifest(
        "prod-debug", "shop", "alice", ["devs", "system:authenticated"], "30m", "incident 42", PINNED_NOW
    )
    assert manifest["metadata"] == {"namespace": "shop", "generateName": "prod-debug-"}
    spec = AccessRequestSpec.model_validate(manifest["spec"])
    assert spec.requester.username == "alice"
    assert spec.requester.groups == ["devs", "system:authenticated"]
    assert manifest["spec"]["startAt"] == "2030-06-15T12:00:00Z"
    named = request_manifest("prod-debug", "shop", "alice", [], "30m", "why", name="mine")
    assert named["metadata"] == {"namespace": "shop", "name": "mine"}
    assert "startAt" not in named["spec"]


def test_approval_manifest_approves_or_denies_as_the_caller() -> None:
    approve = approval_manifest("req-1", "shop", "bob", ["leads"], deny=False, comment=None)
    deny = approval_manifest("req-1", "shop", "bob", [], deny=True, comment="not now")
    assert AccessApprovalSpec.model_validate(approve["spec"]).decision == "Approve"
    assert AccessApprovalSpec.model_validate(deny["spec"]).comment == "not now"
    assert deny["spec"]["decision"] == "Deny"
    assert approve["metadata"]["generateName"] == "req-1-"


def _request(name: str, namespace: str, created: timedelta, status: dict[str, str]) -> dict[str, object]:
    stamp = (PINNED_NOW - created).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": stamp},
        "spec": {"requester": {"username": "alice"}, "eligibility": "prod-debug"},
        "status": status,
    }


def test_list_table_columns_and_times() -> None:
    expires = (PINNED_NOW + timedelta(minutes=25)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expired = (PINNED_NOW - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    requests = [
        _request(
            "b-active",
            "shop",
            timedelta(minutes=5),
            {"state": "Active", "role": "ClusterRole/edit", "expiresAt": expires},
        ),
        _request("a-new", "shop", timedelta(seconds=4), {}),
        _request("c-old", "bank", timedelta(hours=2), {"state": "Expired", "role": "Role/debug", "expiresAt": expired}),
    ]
    assert list_output(requests, PINNED_NOW, all_namespaces=True, namespace="shop") == (
        "NAMESPACE   NAME       REQUESTER   ROLE               STATE     EXPIRES   AGE\n"
        "bank        c-old      alice       Role/debug         Expired   3m ago    120m\n"
        "shop        a-new      alice       -                  -         -         4s\n"
        "shop        b-active   alice       ClusterRole/edit   Active    in 25m    5m\n"
    )
    one_namespace = list_output(requests[:1], PINNED_NOW, all_namespaces=False, namespace="shop")
    assert one_namespace.splitlines()[0].split() == ["NAME", "REQUESTER", "ROLE", "STATE", "EXPIRES", "AGE"]
    assert list_output([], PINNED_NOW, all_namespaces=False, namespace="shop") == (
        "No AccessRequests found in shop namespace.\n"
    )


def test_object_output_forms() -> None:
    obj = {"apiVersion": "accesshygiene.io/v1alpha1", "kind": "AccessRequest", "metadata": {"name": "r-x1"}}
    assert object_output(obj, "name", "created") == "accessrequest.accesshygiene.io/r-x1 created\n"
    assert json.loads(object_output(obj, "json", "created")) == obj
    assert yaml.safe_load(object_output(obj, "yaml", "created")) == obj


def test_parser_knows_the_four_actions() -> None:
    parser = build_parser("access")
    args = parser.parse_args(["access", "request", "prod-debug", "--duration", "30m", "--reason", "x", "-n", "shop"])
    assert (args.action, args.eligibility, args.namespace, args.output) == ("request", "prod-debug", "shop", "name")
    assert parser.parse_args(["access", "approve", "r1", "--deny"]).deny is True
    assert parser.parse_args(["access", "revoke", "r1", "-o", "yaml"]).output == "yaml"
    assert parser.parse_args(["access", "list", "-A", "-o", "json"]).all_namespaces is True
    with pytest.raises(SystemExit):
        parser.parse_args(["access", "request", "e", "--duration", "1m", "--reason", "x", "--start-at", "tomorrow"])

"""The just-in-time access models: durations, subjects, and the CRDs generated from them."""

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from access_hygiene.models.access import (
    AccessEligibilitySpec,
    AccessRequestSpec,
    Subject,
    parse_duration,
    split_service_account,
)
from access_hygiene.models.crd import ACCESS_KINDS, build_crd
from tests.unit.test_crd_schema import walk

pytestmark = pytest.mark.unit


def request() -> dict[str, Any]:
    return {"eligibility": "oncall", "requester": {"username": "alice"}, "duration": "30m", "reason": "incident"}


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h30m", 5400), ("45s", 45), ("168h", 604800), ("0s", 0)]
)
def test_go_durations_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["-5m", "1d", "5", "1.5h", "", "m"])
def test_other_duration_forms_are_refused_with_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match="use hours, minutes and seconds such as 30m"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("0s", "must be greater than 0s"),
        ("0h0m", "must be greater than 0s"),
        ("169h", "longer than the maximum 168h"),
        ("999999h", "longer than the maximum 168h"),
        ("-1m", "String should match pattern"),
    ],
)
def test_request_duration_bounds(duration: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AccessRequestSpec.model_validate({**request(), "duration": duration})


def test_start_at_must_be_a_time_with_a_zone() -> None:
    with pytest.raises(ValidationError, match="has no timezone"):
        AccessRequestSpec.model_validate({**request(), "startAt": "2030-06-15T12:00:00"})
    assert AccessRequestSpec.model_validate({**request(), "startAt": "2030-06-15T12:00:00Z"}).start_at


def test_service_account_subjects_need_a_namespace_and_only_they_have_one() -> None:
    with pytest.raises(ValidationError, match="needs its namespace"):
        Subject.model_validate({"kind": "ServiceAccount", "name": "ci"})
    with pytest.raises(ValidationError, match="only a ServiceAccount subject has a namespace"):
        Subject.model_validate({"kind": "User", "name": "alice", "namespace": "shop"})


def test_an_eligibility_nobody_can_approve_is_refused() -> None:
    spec = {
        "subjects": [{"kind": "User", "name": "alice"}],
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "namespaces": ["shop"],
        "maxDuration": "1h",
    }
    with pytest.raises(ValidationError, match="nobody can approve"):
        AccessEligibilitySpec.model_validate(spec)
    assert AccessEligibilitySpec.model_validate({**spec, "selfApproval": True}).self_approval


def test_service_account_usernames_split() -> None:
    assert split_service_account("system:serviceaccount:shop:ci") == ("shop", "ci")
    assert split_service_account("alice") is None
    assert split_service_account("system:serviceaccount:shop") is None


@pytest.mark.parametrize("definition", ACCESS_KINDS, ids=lambda d: d.plural)
def test_access_crds_are_structural_and_bounded(definition: Any) -> None:
    crd = build_crd(definition)
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, node in walk(spec, "spec"):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs"} & node.keys(), path
        assert "type" in node, f"{path} has no type"
        if node["type"] == "array":
            assert "maxItems" in node, f"{path} needs maxItems"
        if node["type"] == "string" and "enum" not in node:
            assert "maxLength" in node, f"{path} needs maxLength (CEL cost)"
    assert version["subresources"] == {"status": {}}


def test_access_request_printer_columns() -> None:
    from access_hygiene.models.crd import ACCESS_REQUEST

    version = build_crd(ACCESS_REQUEST)["spec"]["versions"][0]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Requester", "Role", "Namespace", "State", "Expires", "Age"]
    assert build_crd(ACCESS_REQUEST)["spec"]["names"]["shortNames"] == ["acreq"]

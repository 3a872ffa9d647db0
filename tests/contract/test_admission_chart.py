"""The chart's admission switch: off by default (nothing rendered); on, the operator gets the owner ClusterRole,
its permissions and the settings that point at it."""

import subprocess
from pathlib import Path
from typing import Any

import pytest

from access_hygiene.settings import OperatorSettings
from tests.contract.chart import render

pytestmark = pytest.mark.contract


def _env(docs: list[dict[str, Any]]) -> dict[str, str]:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    return {e["name"]: e.get("value", "") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_admission_is_off_by_default(helm: Path) -> None:
    docs = render(helm)
    assert not [d for d in docs if d["metadata"]["name"].endswith("-admission")]
    assert _env(docs)["ACCESS_HYGIENE_ADMISSION_ENABLED"] == "false"
    assert "ACCESS_HYGIENE_ADMISSION_OWNER_CLUSTER_ROLE" not in _env(docs)


def test_admission_on_renders_owner_and_permissions(helm: Path) -> None:
    docs = render(helm, "--set", "admission.enabled=true")
    env = _env(docs)
    owner = env["ACCESS_HYGIENE_ADMISSION_OWNER_CLUSTER_ROLE"]
    assert owner == "access-hygiene-admission"
    settings = OperatorSettings(
        admission_enabled=env["ACCESS_HYGIENE_ADMISSION_ENABLED"],  # type: ignore[arg-type]
        admission_owner_cluster_role=owner,
    )
    assert settings.admission_enabled is True
    assert not any("REFRESH" in name for name in env)  # no timer: admission follows events (docs/admission.md)
    role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == owner)
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"validatingadmissionpolicies", "validatingadmissionpolicybindings", "mutatingadmissionpolicies",
            "mutatingadmissionpolicybindings"} <= resources  # fmt: skip
    assert not any("*" in rule["verbs"] or "escalate" in rule["verbs"] for rule in role["rules"])
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ClusterRoleBinding", owner) in kinds


@pytest.mark.parametrize(("values", "expected"), [((), "warn"), (("--set", "admission.roleCapabilities=deny"), "deny"),
                                                  (("--set", "admission.roleCapabilities=off"), "off")])  # fmt: skip
def test_role_capabilities_profile_reaches_the_operator(helm: Path, values: tuple[str, ...], expected: str) -> None:
    """admission.roleCapabilities (warn by default) becomes the operator's setting (docs/admission.md)."""
    env = _env(render(helm, "--set", "admission.enabled=true", *values))
    assert env["ACCESS_HYGIENE_ADMISSION_ROLE_CAPABILITIES"] == expected
    settings = OperatorSettings(
        admission_role_capabilities=env["ACCESS_HYGIENE_ADMISSION_ROLE_CAPABILITIES"],  # type: ignore[arg-type]
    )
    assert settings.admission_role_capabilities == expected


def test_deprecated_refresh_seconds_still_validates_and_does_nothing(helm: Path) -> None:
    """admission.refreshSeconds was removed (nothing polls); a values file from an earlier release keeps working."""
    env = _env(render(helm, "--set", "admission.enabled=true", "--set", "admission.refreshSeconds=60"))
    assert not any("REFRESH" in key for key in env)


def test_role_capabilities_profile_refuses_other_values(helm: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        render(helm, "--set", "admission.enabled=true", "--set", "admission.roleCapabilities=block")
    assert "roleCapabilities" in str(failed.value.stderr)

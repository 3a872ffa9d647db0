"""Conditions keep their transition time while their status holds."""

import pytest

from access_hygiene.engine.planning.policy_status import status_changed
from access_hygiene.models.status import set_condition

pytestmark = pytest.mark.unit


def test_transition_time_kept_while_status_unchanged() -> None:
    previous = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    kept = set_condition(
        previous,
        type_="Ready",
        status="True",
        reason="Reconciled",
        message="m",
        generation=2,
        now="2026-02-02T00:00:00Z",
    )
    flipped = set_condition(
        previous,
        type_="Ready",
        status="False",
        reason="NameConflict",
        message="m",
        generation=2,
        now="2026-02-02T00:00:00Z",
    )
    assert kept.last_transition_time == "2026-01-01T00:00:00Z"
    assert flipped.last_transition_time == "2026-02-02T00:00:00Z"
    assert kept.observed_generation == 2


@pytest.mark.parametrize(
    ("current", "desired", "changed"),
    [
        (None, {"mode": "audit"}, True),
        ({"mode": "audit", "kopf": {"x": 1}}, {"mode": "audit"}, False),
        ({"mode": "audit"}, {"mode": "enforce"}, True),
        ({"conditions": [{"type": "Ready"}]}, {"conditions": []}, True),
    ],
)
def test_status_changed_ignores_foreign_keys(
    current: dict[str, object] | None, desired: dict[str, object], changed: bool
) -> None:
    assert status_changed(current, desired) is changed

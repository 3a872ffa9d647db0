"""Fixtures of the contract tier."""

from pathlib import Path

import pytest
from scripts.render_chart import find_helm


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return find_helm()
    except FileNotFoundError as error:
        pytest.fail(f"{error} (the chart contract needs helm; `make controlplane` builds it)")

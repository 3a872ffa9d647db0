"""The chart contract tests' shared helper: render the chart with values."""

from pathlib import Path
from typing import Any

import yaml
from scripts.render_chart import helm_template


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    """`helm template` of the chart with extra arguments, as parsed documents."""
    return [doc for doc in yaml.safe_load_all(helm_template(helm, *args)) if doc]

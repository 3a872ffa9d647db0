"""Generators for the monitoring artefacts the Helm chart embeds (Grafana dashboard, Prometheus rules).

Run `python -m monitoring` to rewrite helm/access-hygiene/files/; a contract test checks they are current.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FILES_DIR = REPO_ROOT / "helm" / "access-hygiene" / "files"
DASHBOARD_PATH = FILES_DIR / "dashboard.json"
RULES_PATH = FILES_DIR / "prometheus-rules.yaml"

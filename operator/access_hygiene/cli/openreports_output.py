"""`access-hygiene scan -o openreports`: the findings as the OpenReports objects the operator writes.

Multi-document YAML (a Report per namespace, a ClusterReport for cluster-scoped findings), ready for
`kubectl apply -f -` where the openreports.io CRDs are installed. Same renderer as the operator.
"""

from collections.abc import Sequence
from typing import IO

import yaml

from access_hygiene.models.findings import Finding
from access_hygiene.render.reports import DEFAULT_MAX_RESULTS, render_reports


def write_openreports(findings: Sequence[Finding], stream: IO[str], max_results: int = DEFAULT_MAX_RESULTS) -> None:
    reports = render_reports(findings, max_results)
    if not reports:
        stream.write("# No findings: no reports.\n")
        return
    stream.write(yaml.safe_dump_all(reports, sort_keys=False, explicit_start=True, width=120))

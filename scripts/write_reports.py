"""Writes the current findings of a cluster as OpenReports objects, once, with the operator's ReportWriter.

A stand-in until the operator calls ReportWriter after each scan: `python scripts/write_reports.py`
against $KUBECONFIG (e.g. the local default of `make run`), then `kubectl get reports -A`.
Prints the number of writes; run it twice to see the second make none.
"""

import argparse
import sys
from datetime import UTC, datetime

from access_hygiene.k8s.client import make_api_client
from access_hygiene.k8s.reports import ReportWriter
from access_hygiene.k8s.scan import scan_cluster
from access_hygiene.settings import OperatorSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG")
    args = parser.parse_args(argv)
    settings = OperatorSettings()
    writer = ReportWriter(max_results=settings.report_max_results)
    with make_api_client(args.kubeconfig) as api:
        _, result = scan_cluster(api, settings, datetime.now(UTC))
        writes = writer.sync(api, result.findings)
    print(f"{len(result.findings)} finding(s); {writes} report write(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

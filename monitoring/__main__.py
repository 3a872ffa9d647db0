"""`python -m monitoring [--check]`: write (or verify) the dashboard and rules under helm/access-hygiene/files/."""

import argparse
import sys

from monitoring import DASHBOARD_PATH, RULES_PATH
from monitoring.alerts import render_rules
from monitoring.dashboard import render_dashboard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitoring", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed files differ from the generated")
    args = parser.parse_args(argv)
    stale = []
    for path, content in ((DASHBOARD_PATH, render_dashboard()), (RULES_PATH, render_rules())):
        if args.check:
            if not path.exists() or path.read_text() != content:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            print(f"Wrote {path}.")
    for path in stale:
        print(f"{path} is out of date; run `python -m monitoring`.", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m sweeper launch|report|compare|dashboard``.

Our own exceptions (sweeper.errors) become ``ERROR:`` lines and exit code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sweeper import __version__
from sweeper.errors import SweeperError


def build_parser(prog: str = "sweeper") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="DPO QLoRA hyperparameter sweeps on Ray Tune, with per-sweep reports."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    launch = sub.add_parser("launch", help="run a sweep from a spec (sweeps/*.yaml)")
    launch.add_argument("spec", type=Path, help="sweep spec, e.g. sweeps/smoke.yaml")
    launch.add_argument("--dry-run", action="store_true", help="print the trials and their effective batch, then exit")
    launch.add_argument("--address", help="Ray cluster address ('auto', 'ray://host:10001'); default: local Ray")
    launch.add_argument("--verbose", action="store_true", help="show the trials' own logs (TRL, transformers)")

    report = sub.add_parser("report", help="(re)write reports/<name>.md from trials/<name>")
    report.add_argument("trials", type=Path, help="a sweep folder, e.g. trials/smoke")
    report.add_argument("--reports-dir", type=Path, help="where to write (default: the spec's output.reports_dir)")

    compare = sub.add_parser("compare", help="sweeps side by side: reports/compare-<names>.md")
    compare.add_argument("trials", type=Path, nargs="+", help="two or more sweep folders, e.g. trials/a trials/b")
    compare.add_argument("--reports-dir", type=Path, help="where to write (default: the first spec's reports_dir)")

    dash = sub.add_parser("dashboard", help="serve a read-only web dashboard of trials/ (Streamlit)")
    dash.add_argument("trials", type=Path, nargs="?", default=Path("trials"),
                      help="a trials folder (every sweep in it) or one sweep folder (default: trials)")  # fmt: skip
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    dash.add_argument("--port", type=int, default=8501, help="port (default: 8501)")
    dash.add_argument("--refresh", type=float, default=5.0, help="seconds between reloads of the records (default 5)")
    return parser


def run(args: argparse.Namespace) -> None:
    if args.command == "launch":
        from sweeper.launch import launch

        launch(args.spec, address=args.address, dry=args.dry_run, verbose=args.verbose)
    elif args.command == "report":
        from sweeper.report import write_report
        from sweeper.store import load_sweep

        sweep = load_sweep(args.trials)
        spec_output = sweep.meta.get("spec", {}).get("output", {})
        reports_dir = args.reports_dir or Path(spec_output.get("reports_dir", "reports"))
        print(f"Report: {write_report(sweep, reports_dir)}")
    elif args.command == "compare":
        from sweeper.compare import write_compare
        from sweeper.store import load_sweep

        sweeps = [load_sweep(p) for p in args.trials]
        spec_output = sweeps[0].meta.get("spec", {}).get("output", {})
        reports_dir = args.reports_dir or Path(spec_output.get("reports_dir", "reports"))
        print(f"Comparison: {write_compare(sweeps, reports_dir)}")
    elif args.command == "dashboard":
        from sweeper.dashboard import serve

        serve(args.trials, host=args.host, port=args.port, refresh_s=args.refresh)


def main(argv: Sequence[str] | None = None, prog: str = "sweeper") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        run(args)
    except SweeperError as exc:
        for line in str(exc).splitlines():
            print(f"ERROR: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ERROR: interrupted; finished trials are kept under trials/", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m sweeper"))

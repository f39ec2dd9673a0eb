"""Command line: ``python -m sweeper launch|resume|report|evaluate|compare|dashboard|replay``.

Our own exceptions (sweeper.errors) become ``ERROR:`` lines and exit code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
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

    resume = sub.add_parser("resume", help="finish a sweep whose driver died: finished trials are kept, the rest rerun")
    resume.add_argument("trials", type=Path, help="the sweep folder, e.g. trials/lr_grid")
    resume.add_argument("--address", help="Ray cluster address ('auto', 'ray://host:10001'); default: local Ray")
    resume.add_argument("--verbose", action="store_true", help="show the trials' own logs (TRL, transformers)")

    report = sub.add_parser("report", help="(re)write reports/<name>.md from trials/<name>")
    report.add_argument("trials", type=Path, help="a sweep folder, e.g. trials/smoke")
    report.add_argument("--reports-dir", type=Path, help="where to write (default: the spec's output.reports_dir)")
    evaluate = sub.add_parser("evaluate", help="held-out evaluation of base and every finished trial, then the report")
    evaluate.add_argument("trials", type=Path, help="a sweep folder, e.g. trials/smoke")
    evaluate.add_argument("--config", type=Path, help="YAML with an evaluation section (default: the sweep spec's)")
    evaluate.add_argument("--address", help="Ray cluster to run one task per trial on ('auto'; 'local' starts a "
                          "private local Ray); default: the sweep's cluster, else inline on this machine")  # fmt: skip
    evaluate.add_argument("--reports-dir", type=Path, help="where to write (default: the spec's output.reports_dir)")
    replay = sub.add_parser("replay", help="replay recorded curves through a pruner, offline")
    replay.add_argument("paths", type=Path, nargs="+", help="trials/<name>, or TRL log_history JSON files")
    replay.add_argument("--pruner", help="peer (sweeper peer), median, percentile, successive_halving, hyperband, "
                        "wilcoxon, threshold, patient, nop (Optuna's), or asha (Ray Tune's ASHA, for comparison); "
                        "default: the sweep's own early_terminate, else median")  # fmt: skip
    replay.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a pruner argument, e.g. --set n_startup_trials=1 (repeatable)")  # fmt: skip
    replay.add_argument("--metric", help="metric to prune on (default: the sweep's, else rewards/margins)")
    replay.add_argument("--goal", choices=["maximize", "minimize"])
    replay.add_argument("--concurrency", type=int, default=1, help="trials running at once (default 1)")
    replay.add_argument("--orders", type=int, default=20, help="random arrival orders to average over (default 20)")
    replay.add_argument("--seed", type=int, default=0)
    replay.add_argument("--smoothing", type=float, help="EMA weight of the history, 0-1 (default: the sweep's)")
    replay.add_argument("--examples-per-step", type=int, default=1,
                        help="for log_history files: examples per optimizer step (default 1)")  # fmt: skip
    replay.add_argument("--on-prune", choices=["stop", "pause"],
                        help="a trial below the bar stops, or pauses and may resume (early_terminate.on_prune; "
                        "default: the sweep's own, else stop)")  # fmt: skip

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


def _overrides(pairs: list[str]) -> dict[str, object]:
    import yaml

    from sweeper.errors import SpecError

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set n_startup_trials=1")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> None:
    if args.command == "launch":
        from sweeper.run.launch import launch

        launch(args.spec, address=args.address, dry=args.dry_run, verbose=args.verbose)
    elif args.command == "resume":
        from sweeper.run.resume import resume

        resume(args.trials, address=args.address, verbose=args.verbose)
    elif args.command == "report":
        from sweeper.records.store import load_sweep
        from sweeper.report.markdown import write_report

        sweep = load_sweep(args.trials)
        spec_output = sweep.meta.get("spec", {}).get("output", {})
        reports_dir = args.reports_dir or Path(spec_output.get("reports_dir", "reports"))
        print(f"Report: {write_report(sweep, reports_dir)}")
    elif args.command == "evaluate":
        from sweeper.records.store import load_sweep
        from sweeper.report.markdown import write_report
        from sweeper.run.evalrun import evaluate_sweep, evaluation_of

        sweep = load_sweep(args.trials)
        spec_output = sweep.meta.get("spec", {}).get("output", {})
        reports_dir = args.reports_dir or Path(spec_output.get("reports_dir", "reports"))
        sweep = evaluate_sweep(sweep.path, evaluation_of(sweep, args.config), args.address, reports_dir)
        print(f"Report: {write_report(sweep, reports_dir)}")
    elif args.command == "replay":
        from sweeper.prune.replay import ReplayOptions, replay_text

        options = ReplayOptions(
            args.paths,
            args.pruner,
            _overrides(args.overrides),
            args.metric,
            args.goal,
            args.concurrency,
            args.orders,
            args.seed,
            args.smoothing,
            args.examples_per_step,
            args.on_prune,
        )
        factory = None
        if args.pruner == "asha":
            from sweeper.tune.asha import AshaGate

            factory = AshaGate
        print(replay_text(options, factory))
    elif args.command == "compare":
        from sweeper.records.store import load_sweep
        from sweeper.report.compare import write_compare

        sweeps = [load_sweep(p) for p in args.trials]
        spec_output = sweeps[0].meta.get("spec", {}).get("output", {})
        reports_dir = args.reports_dir or Path(spec_output.get("reports_dir", "reports"))
        print(f"Comparison: {write_compare(sweeps, reports_dir)}")
    elif args.command == "dashboard":
        from sweeper.report.dashboard import serve

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
        print("ERROR: interrupted; finished trials are kept under trials/: "
              "`python -m sweeper resume trials/<name>` finishes the sweep", file=sys.stderr)  # fmt: skip
        return 130
    except BrokenPipeError:
        # The reader went away (`... --dry-run | head`): stop quietly, as Unix tools do, and keep Python's
        # exit-time flush from raising again (the recipe in Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m sweeper"))

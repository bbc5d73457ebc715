"""`python -m pipeline`: the model lifecycle, whole or one step at a time.

    python -m pipeline run --input URI [--as-of YYYY-MM-DD] [--force] [--batch] [--run-key KEY]
    python -m pipeline step STEP --run-key KEY [--input URI] [--as-of YYYY-MM-DD] [--force]
    python -m pipeline runs [--limit N]

Steps, in order: ingest features materialize drift train evaluate promote deploy batch-score.
Each step's output is kept in <state_dir>/pipeline/runs/<KEY>.json, where the next step
reads it. A refusal by the gate is a normal outcome (exit 0); a failed step exits 1 with
its one-line error; a step run before the one it needs exits 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from configuration.settings import load_settings
from pipeline import lifecycle, record

EPILOG = """\
The gate (pipeline.gate.* settings): the challenger and the production model are scored on
the same rows, the latest 10 % of the new snapshot's date range that neither trained on;
promotion needs ROC-AUC >= min_auc (0.55), ROC-AUC no more than max_auc_drop (0.005)
below the champion's, and a Brier score no worse than the champion's by more than
max_brier_rise (5 %) and Brier skill >= min_brier_skill (-0.05). --force promotes anyway.
See README.md ("The lifecycle pipeline")."""


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write it YYYY-MM-DD") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Run the model lifecycle: ingest a raw CSV, "
        "compute features, train a challenger, gate it against production, promote and "
        "deploy.\n" + __doc__.split("\n", 1)[1],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,step,runs}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--input", metavar="URI", help="the raw loans CSV: a local path or s3://bucket/key")
        p.add_argument(
            "--as-of", type=_date, metavar="YYYY-MM-DD", help="date of the latest features (default: today, UTC)"
        )
        p.add_argument(
            "--force", action="store_true", help="recompute the features, train, and promote whatever the gate says"
        )

    run = commands.add_parser(
        "run",
        help="the whole lifecycle in the foreground, each step printed",
        description="Every step in order, each printed with its time and outcome, then one "
        "summary line: the snapshot, the challenger, the gate's decision and why.",
    )
    common(run)
    run.add_argument("--batch", action="store_true", help="also batch-score the latest table with the production model")
    run.add_argument("--run-key", metavar="KEY", help="the run record's key (default: run-<UTC time>)")

    step = commands.add_parser(
        "step",
        help="one step, its inputs read from the run record of --run-key",
        description="Run one step of run KEY. Its inputs are its predecessors' outputs in "
        "<state_dir>/pipeline/runs/KEY.json; rerunning it for the same key reuses its output "
        "while those inputs are unchanged.",
    )
    step.add_argument("step", choices=lifecycle.STEPS, metavar="STEP", help=" ".join(lifecycle.STEPS))
    step.add_argument(
        "--run-key", required=True, metavar="KEY", help="the run this step belongs to (e.g. the Airflow logical date)"
    )
    common(step)

    runs = commands.add_parser("runs", help="recent runs and their decisions")
    runs.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    settings = load_settings()
    if args.command == "runs":
        found = record.recent(settings, args.limit)
        if not found:
            print(f"no pipeline runs in {record.runs_dir(settings)} yet: python -m pipeline run --input CSV")
        for item in found:
            steps = item.get("steps", {})
            failed = [name for name, entry in steps.items() if entry.get("status") == "failed"]
            line = item.get("summary") or (
                f"failed at {failed[0]}: {steps[failed[0]].get('error')}"
                if failed
                else f"steps done: {', '.join(steps) or 'none'}"
            )
            print(f"{item.get('updated_at', '?'):<21} {item.get('key')}: {line}")
        return 0
    params = lifecycle.Params(input=args.input, as_of=args.as_of, force=args.force)
    if args.command == "run":
        if not args.input:
            raise lifecycle.MissingStep("run needs --input URI (a local CSV path or s3://bucket/key)")
        key = record.check_key(args.run_key or dt.datetime.now(dt.timezone.utc).strftime("run-%Y%m%dT%H%M%SZ"))
        lifecycle.run(settings, key, params, batch=args.batch)
        return 0
    rec = record.RunRecord.open(settings, args.run_key)
    lifecycle.run_step(settings, rec, args.step, params)
    return 0

"""Command line of monitoring.

    python -m monitoring drift  [--snapshot RUN_ID] [--lake URI]     measure and store a snapshot's drift (default: the current)
    python -m monitoring report [--snapshot RUN_ID] [--out report.html] [--recompute] [--lake URI]
    python -m monitoring show   [--lake URI]                         the latest stored figures, one line each

`report` measures the snapshot first when it was not measured yet (or with --recompute),
writes the HTML page and prints the one-line summary. `drift` exits 0 whether or not the
snapshot drifted (the alert is printed); 2 for a problem the user can fix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from configuration.errors import UserError
from configuration.settings import Settings, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring",
        description="Feature drift, prediction drift and realized quality of the production model: measured after each "
        "feature run, stored (Parquet under the snapshot, Hive tables drift, prediction_drift, realized_quality), "
        "exported to the API's /metrics and shown in an HTML report.",
        epilog="Thresholds and windows: the [monitoring] settings (configuration/sparkmaker.toml, SPARKMAKER_MONITORING__*).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{drift,report,show}")
    drift = commands.add_parser("drift", help="measure a snapshot (default: the current one) and store the results")
    report = commands.add_parser("report", help="write the HTML report of a snapshot and print its summary")
    show = commands.add_parser("show", help="print the latest stored figures")
    for sub in (drift, report):
        sub.add_argument("--snapshot", metavar="RUN_ID", help="the snapshot's run id (default: the current snapshot)")
    report.add_argument(
        "--out", type=Path, default=Path("monitoring-report.html"), help="HTML file to write (default: %(default)s)"
    )
    report.add_argument("--recompute", action="store_true", help="measure the snapshot again even if it was measured")
    for sub in (drift, report, show):
        sub.add_argument("--lake", help="lake root (default: paths.lake setting)")
    return parser


def _settings(args) -> Settings:
    settings = load_settings()
    if args.lake:
        settings = settings.model_copy(update={"paths": settings.paths.model_copy(update={"lake": args.lake})})
    return settings


def _snapshot(settings: Settings, run_id: str | None) -> str:
    from features import lake

    return lake.read_manifest(settings, run_id)["run_id"]  # one line when there is none


def _print_outcome(outcome) -> None:
    print(f"[monitoring] {outcome.summary}")
    for problem in outcome.problems:
        print(f"[monitoring] not measured: {problem}")
    if outcome.tables:
        print(f"[monitoring] tables: {', '.join(outcome.tables)}")
    print(f"[monitoring] {'ALERT' if outcome.alert else 'no alert'}: {outcome.reason}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = _settings(args)
    if args.command == "show":
        from monitoring.figures import read_latest

        figures = read_latest(settings)
        if figures is None:
            raise UserError("no drift step has run yet: run python -m monitoring drift")
        print(f"{figures['summary']}\n{'ALERT' if figures['alert'] else 'no alert'}: {figures['reason']}")
        for row in figures["drift"]:
            psi = "" if row["psi"] is None else f" PSI {row['psi']:.4f} KS {row['ks_statistic']:.4f}"
            print(f"  {row['comparison']:8} {row['feature']:26} {row['status']:12}{psi} {row['note']}".rstrip())
        return 0

    from monitoring import store
    from monitoring.report import report_html
    from monitoring.step import drift_step

    run_id = _snapshot(settings, args.snapshot)
    measured = args.command == "drift" or args.recompute or store.read_results(settings, run_id, "drift") is None
    if measured:
        print(f"[monitoring] measuring snapshot {run_id} ...", file=sys.stderr, flush=True)
        _print_outcome(drift_step(settings, run_id))
    if args.command == "report":
        page = report_html(settings, run_id)
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write the report to {args.out}: {exc.strerror}") from None
        if not measured:
            from monitoring.report import snapshot_figures

            print(
                f"[monitoring] {snapshot_figures(settings, run_id, store.read_results(settings, run_id, 'drift'))['summary']}"
            )
        print(f"[monitoring] report written to {args.out} ({len(page) / 1e3:,.0f} kB)")
    return 0

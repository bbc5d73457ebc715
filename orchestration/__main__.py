"""python -m orchestration serve: Airflow for the DAG credit_risk_lifecycle (see orchestration/runtime.py)."""

import argparse

from configuration.errors import run_cli
from configuration.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestration",
        description="Run Airflow (its scheduler, DAG processor, triggerer and API server from .venv-airflow, installed "
        "when missing) with the DAG credit_risk_lifecycle, configured from the airflow.* settings; the UI at "
        "http://airflow.host:airflow.port, and nothing else listening.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="scheduler, DAG processor, triggerer and API server in the foreground")
    cli = commands.add_parser(
        "cli",
        help="the airflow CLI with the same home and configuration, e.g. "
        "cli dags trigger credit_risk_lifecycle --logical-date 2026-12-01",
    )
    cli.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the airflow command")
    args = parser.parse_args(argv)
    from orchestration import runtime

    settings = load_settings()
    if args.command == "cli":
        runtime.airflow_cli(settings, args.args)
    runtime.serve(settings)
    return 0


if __name__ == "__main__":
    run_cli(main, "orchestration")

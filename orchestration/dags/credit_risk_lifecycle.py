"""The DAG credit_risk_lifecycle: the model lifecycle of sparkmaker, one task per pipeline step.

    ingest -> features -> materialize -> drift -> train -> evaluate -> promote -> deploy [-> batch-score]

Each task runs the project's own CLI in the project's venv, as a subprocess:

    <project python> -m pipeline step STEP --run-key airflow-<as_of> --as-of <as_of> [--input URI] [--force]

so the lifecycle's decisions live once, in `pipeline/`, and the DAG only wires order, retries
and the schedule. The logical date is `as_of` and the run key is derived from it: rerunning a
date reuses that date's outputs (`<state_dir>/pipeline/runs/<key>.json`), and a backfill over
past dates yields one snapshot per date. XCom carries only the run key.

This file runs inside Airflow's own venv (.venv-airflow) and is parsed every few seconds by the
scheduler: it imports nothing of the project and does no I/O at its top level. Its settings
come from the environment the local stack (or the compose cluster) gives Airflow, under the
project's own names (`SPARKMAKER_AIRFLOW__*`, built by `orchestration.runtime.dag_environment`
from `configuration/settings.py`'s AirflowSettings); the tasks inherit that environment too, so
the CLI sees the stack's SPARKMAKER_* settings.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

DAG_ID = "credit_risk_lifecycle"
STEPS = ("ingest", "features", "materialize", "drift", "train", "evaluate", "promote", "deploy")
OPTIONAL_STEP = "batch-score"
REPO_ROOT = Path(__file__).resolve().parents[2]
# The CLI's exit code when a predecessor step of the same run key has no output: retrying
# this step cannot help, so the task fails at once instead of retrying.
EXIT_MISSING_PREDECESSOR = 2


def setting(name: str, default: str) -> str:
    """One AirflowSettings value as the stack exported it (SPARKMAKER_AIRFLOW__<NAME>)."""
    return os.environ.get(f"SPARKMAKER_AIRFLOW__{name.upper()}") or default


def schedule() -> str | None:
    """airflow.schedule: a cron expression or preset; `none` runs the DAG only when triggered."""
    value = setting("schedule", "@daily")
    return None if value.strip().lower() == "none" else value


def as_of_date(context: dict) -> str:
    """The run's date: its logical date, or, for a run triggered without one, when it was due."""
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.strftime("%Y-%m-%d")


def run_key(as_of: str) -> str:
    return f"airflow-{as_of}"


def step_command(step: str, as_of: str, params: dict) -> list[str]:
    python = setting("project_python", str(REPO_ROOT / ".venv" / "bin" / "python"))
    command = [python, "-m", "pipeline", "step", step, "--run-key", run_key(as_of), "--as-of", as_of]
    input_uri = params.get("input") or setting("input_uri", "")
    if step == "ingest" and input_uri:
        command += ["--input", input_uri]
    if params.get("force"):
        command.append("--force")
    return command


def run_step(step: str, **context) -> str:
    """Run one step through the CLI, its output streamed into the task log; returns the run key."""
    import subprocess

    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    as_of = as_of_date(context)
    command = step_command(step, as_of, context["params"])
    print("running: " + " ".join(command), flush=True)
    last = ""
    with subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        if process.stdout is None:  # stdout=PIPE gives it
            raise RuntimeError(f"step {step}: the subprocess has no output pipe")
        for line in process.stdout:
            print(line, end="", flush=True)
            last = line.strip() or last
    if process.returncode == EXIT_MISSING_PREDECESSOR:
        raise AirflowFailException(f"step {step} cannot run for {run_key(as_of)}: {last[:400]}")
    if process.returncode != 0:
        raise AirflowException(f"step {step} failed (exit {process.returncode}): {last[:400]}")
    return run_key(as_of)


def build_dag() -> DAG:
    steps = STEPS + ((OPTIONAL_STEP,) if setting("batch_score", "false").lower() in ("1", "true", "yes") else ())
    retry_delay = float(setting("retry_delay_seconds", "30"))
    default_args = {
        "retries": int(setting("retries", "2")),
        "retry_delay": timedelta(seconds=retry_delay),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=float(setting("max_retry_delay_seconds", "600"))),
    }
    with DAG(
        dag_id=DAG_ID,
        description="ingest -> features -> materialize -> drift -> train -> evaluate -> promote -> deploy",
        schedule=schedule(),
        # Early, so that a backfill may cover any past date of a credit file; catchup=False keeps
        # the scheduler from running those dates by itself.
        start_date=datetime(2000, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        # One lifecycle at a time: a feature run holds the dataset's lock, and two runs would
        # race for the production alias.
        max_active_runs=1,
        default_args=default_args,
        params={
            "force": Param(
                False, type="boolean", description="Recompute every step and promote regardless of the gate."
            ),
            "input": Param(
                "", type="string", description="Raw CSV to ingest instead of the configured one (path or s3:// URI)."
            ),
        },
        tags=["sparkmaker"],
        doc_md=__doc__,
    ) as dag:
        previous = None
        for step in steps:
            task = PythonOperator(task_id=step.replace("-", "_"), python_callable=run_step, op_kwargs={"step": step})
            if previous is not None:
                previous >> task
            previous = task
    return dag


dag = build_dag()
